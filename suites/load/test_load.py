"""Load: the candidate alone under a steady load, against the SLOs users are promised."""

from __future__ import annotations

from releasegate.plugins.fixtures import LoadRunner, ReleaseInfo

SLOS = ("p(95) < 300ms", "error_rate < 1%")
"""What users are promised; `[vars] slos` replaces them for every stage's checks (a list of thresholds)."""


def test_candidate_meets_its_slos_under_load(load: LoadRunner, release: ReleaseInfo) -> None:
    settings = release.vars
    promised = tuple(settings.get("slos", SLOS))
    duration_s = float(settings.get("load_duration_s", 15))
    result = load.run(
        "locustfile.py",
        users=int(settings.get("load_users", 10)),
        duration_s=duration_s,
        # The SLOs are judged every second, over all endpoints and each busy one: a clear failure stops the
        # load at once; a pass needs the bounds inside the SLOs, so an undecided window extends up to here.
        # 120 s: 2% errors on an endpoint with a quarter of the traffic need about 2,100 of its requests to
        # show "over 1%" at alpha 0.01, some 70 s at the demo's pace; a healthy candidate stops far sooner.
        checks=promised,
        max_duration_s=float(settings.get("load_max_duration_s", max(120.0, duration_s))),
        min_requests=int(settings.get("load_min_requests", 200)),
        # Load beyond one process (README, "Load beyond one process"): locust --processes on this machine, or
        # a master here with workers elsewhere (local worker processes unless load_master names an address).
        processes=int(settings.get("load_processes", 1)),
        workers=int(settings.get("load_workers", 0)),
        master=str(settings.get("load_master", "")),
        workers_timeout_s=float(settings.get("load_workers_timeout_s", 30)),
    )
    # Over all endpoints and each busy endpoint on its own (a failing checkout must not hide in the total).
    result.check(*promised, "rps > 20")
    # Every answer came from the version under test, not from a pod of the live slot.
    assert set(result.versions) == {release.version}, f"answers came from {result.versions}"
