"""The cost planner: replays traffic through the gateway's own policies on a virtual clock.

``frugalserve simulate`` reads a trace (:mod:`.trace`), gives each pool a performance model
(:mod:`.perf`), and runs :mod:`.core`: the live lifecycle, routing and autoscaling decision code
(:mod:`frugalserve.lifecycle.policy`, :mod:`frugalserve.lifecycle.autoscale`,
:mod:`frugalserve.lifecycle.scaler`, :mod:`frugalserve.routing`), imported, never copied, with time
taken from the trace instead of a clock that sleeps. :mod:`.report` turns each run into the numbers a
user decides with.
"""
