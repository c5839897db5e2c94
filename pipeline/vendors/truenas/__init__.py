"""truenas: normalize.py (pure: raw document -> JobEvents); ingest.py and simulator.py; this file declares the vendor once (the registry finds it)."""

from pipeline.vendors.registry import Vendor

VENDOR = Vendor(
    "truenas", added=4, kind="push",
    ingest_help="Follow TrueNAS middleware jobs (core.get_jobs) into raw.truenas.",
    ingest_command="pipeline.vendors.truenas.commands:ingest",
    simulate_command="pipeline.vendors.truenas.commands:simulate",
    run_command="pipeline.vendors.truenas.commands:run_arguments",
    demo_processes="pipeline.vendors.truenas.commands:demo_processes",
    hostile=({"msg": "changed", "collection": "core.get_jobs", "id": "x" * 300},),
    demo_secrets=(("JOBSTREAM_TRUENAS_API_KEY", "1-demo-truenas-api-key"),),
    bench="pipeline.bench.workload:_truenas_run",
)
