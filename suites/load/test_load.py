"""Load: the candidate alone under a steady load, against the SLOs users are promised."""

from __future__ import annotations

from releasegate.plugins.fixtures import LoadRunner, ReleaseInfo


def test_candidate_meets_its_slos_under_load(load: LoadRunner, release: ReleaseInfo) -> None:
    settings = release.vars
    result = load.run(
        "locustfile.py",
        users=int(settings.get("load_users", 10)),
        duration_s=float(settings.get("load_duration_s", 15)),
        min_requests=int(settings.get("load_min_requests", 200)),
        # A clearly broken candidate stops the load early instead of hammering on for the whole duration.
        stop_on_breach=("error_rate < 1%",),
    )
    result.check("p(95) < 300ms", "error_rate < 1%", "rps > 20")
    result.check("p(95) < 300ms", endpoint="/api/checkout")
    # Every answer came from the version under test, not from a pod of the live slot.
    assert set(result.versions) == {release.version}, f"answers came from {result.versions}"
