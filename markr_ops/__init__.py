"""markr-ops: the operator's command line for Markr's queues, dead letters and replays."""
