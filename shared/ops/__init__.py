"""Operator use cases: replaying from the vault (replay.py), the dead-letter sweep (sweep.py) and
the queues report (report.py). The broker's admin side itself is shared.bus.port.BusAdmin, built by
the composition root: `shared.bootstrap.services().bus_admin`.
"""
