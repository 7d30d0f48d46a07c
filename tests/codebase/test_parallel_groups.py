"""The suite's parallel run keeps its groups: tests marked `xdist_group` share one worker (one
chromium, one Redis deployment, one simulation, trioproxy processes started one at a time), which
pytest-xdist's `--dist loadgroup` does by naming the group in each test's id. A pytest that
pytest-xdist cannot rename tests in would run them anywhere, slower and flakier: this fails then."""

import pytest

GROUP = "parallel_groups_check"


@pytest.mark.xdist_group(GROUP)
def test_a_grouped_test_carries_its_group_when_run_by_groups(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup (./scripts/test runs it so)")
    assert request.node.nodeid.endswith(f"@{GROUP}")
