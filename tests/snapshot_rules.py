"""The snapshot rules both hypothesis models of a VM's snapshot tree share
(tests/property/test_snapshot_model.py, tests/unit/system/test_clone_model.py).

A machine mixing these in keeps ``home`` (the DRIVEBAY_HOME with VM "m"),
``disk`` (what VM "m"'s normal disk should read), ``snaps`` (snapshot uuid ->
that content when taken, in the order taken: UUIDs are random, so hypothesis
draws from that order to replay a failure) and ``names`` (a counter), and
sets MAX_SNAPSHOTS.
"""

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from drivebay.system import snapshots


class SnapshotRules(RuleBasedStateMachine):
    MAX_SNAPSHOTS = 6

    @precondition(lambda self: len(self.snaps) < self.MAX_SNAPSHOTS)
    @rule()
    def take(self):
        self.names += 1
        snap = snapshots.take(self.home, "m", f"s{self.names}")
        self.snaps[snap.uuid] = bytes(self.disk)

    @precondition(lambda self: self.snaps)
    @rule(pick=st.data())
    def restore(self, pick):
        uuid = pick.draw(st.sampled_from(list(self.snaps)))
        snapshots.restore(self.home, "m", uuid)
        self.disk[:] = self.snaps[uuid]

    @precondition(lambda self: self.snaps)
    @rule(pick=st.data())
    def delete(self, pick):
        uuid = pick.draw(st.sampled_from(list(self.snaps)))
        snapshots.delete(self.home, "m", uuid)
        del self.snaps[uuid]
