"""Operator programs zk0bot runs beside the apps (not shipped in the FAB): keys, the private link, the admin's run bookkeeping."""
