"""The setlist reads where they take shortcuts.

The read script answers from stored totals and counters when it may (the counters'
day, no play after ``as_of``); that must give exactly what the recompute gives.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Backend
from tests.setlist_oracle import SetlistOracle, check_all_reads
from tests.test_setlists_property import event_sets, fresh_store, play_dates

FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@given(data=st.data())
@FEW
def test_stored_shortcuts_agree_with_or_without_later_plays(
    backend: Backend, data: st.DataObject
) -> None:
    # Counters kept on the last play date: every read takes its shortcut (stored ranking,
    # windows and totals). Kept on an earlier play date: later plays exist, so totals and
    # last plays are counted as of that day, while the counters still answer. Read at the
    # last date with counters kept earlier: totals stored, windows counted.
    base, events = data.draw(event_sets(), label="events")
    oracle = SetlistOracle(events)
    dates = play_dates(oracle) or [base]
    earlier = data.draw(st.sampled_from(dates[:-1] or dates), label="earlier")
    for kept, as_ofs in ((dates[-1], [dates[-1]]), (earlier, [earlier, dates[-1]])):
        with fresh_store(backend) as store:
            store.apply(events, kept)
            for vertical in sorted(oracle.known):
                for as_of in as_ofs:
                    check_all_reads(store, oracle, vertical, as_of)
