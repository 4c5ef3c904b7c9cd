"""The system tier's processes choose their local ports from this worker's own range (ports.py)."""

import os

from ports import SERVICE_PORTS

os.environ["ZK0_LOCAL_PORTS"] = SERVICE_PORTS
