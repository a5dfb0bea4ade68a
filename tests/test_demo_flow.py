"""The demo flow in the Prefect UI: named, as every run of the nightly flow is, after the run it makes."""

import pytest

from flows.demo import demo


@pytest.mark.usefixtures("prefect_harness")
def test_the_demo_flow_run_is_named_after_its_run(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    summary = demo(db=str(tmp_path / "demo.duckdb"), n_items=300, n_classes=3)
    with get_client(sync_client=True) as client:
        named = client.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [summary["run_id"]]}))
        flows = {client.read_flow(run.flow_id).name for run in named}
    assert flows == {"pairwise-demo", "reclassify-catalog"}  # the demo's was named at random ('debonair-mackerel')
