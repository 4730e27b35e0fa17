# cython: language_level=3
def f(): return 1
