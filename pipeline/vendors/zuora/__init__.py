"""zuora: normalize.py (pure: raw document -> JobEvents); ingest.py and simulator.py; this file declares the vendor once (the registry finds it)."""

from pipeline.vendors.registry import Vendor

VENDOR = Vendor(
    "zuora", added=3, kind="pull",
    ingest_help="Poll Zuora RevPro BI Views biviews-status; send each token whose queue, status or counters changed.",
    simulate_help="Serve Zuora RevPro BI Views (authenticate, biviews-status) with tokens that go stale, come back or drain, until Ctrl-C.",
    settings="pipeline.vendors.zuora.ingest:ZuoraSettings",
    simulator="pipeline.vendors.zuora.simulator:demo_simulator",
    # No 429 storms for Zuora: at 30x a token is stale for only 2 real seconds before it comes
    # back, and a storm's Retry-After would hide that from the poller (the demo shows it).
    demo_faults="error=0.05,malformed=0.02,duplicate=0.1,reorder=0.3",
    demo_config=(("user", "revpro-user"), ("role", "demo"), ("clientname", "jobstream-demo"), ("source", "revpro-demo"),
                 ("poll_interval_s", 0.5)),
    demo_secrets=(("JOBSTREAM_ZUORA_PASSWORD", "revpro-password"),),
    hostile=("{ \"active\": [ \"task_id\": ", {"active": [{"status": 42}]}),
    bench="pipeline.bench.workload:_zuora_run",
)
