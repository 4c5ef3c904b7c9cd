"""The `zk0` command line and its offline tools (not shipped in the FAB): demo data, baselines, push."""
