"""Simulated owners: closed-loop tasks a policy is scored in by rollouts, and the scripted
experts whose demonstrations become their LeRobot datasets.

ENVS names what run-config `eval-env` and `zk0 rollout --env` accept; the simulators are
imported only when an environment is made.
"""

SO101_REACH = "so101_reach"
ENVS = (SO101_REACH,)
