"""Stage 6, account: one record per request, on every ending (metrics, trace, request
log, usage tally, rate-limit settlement)."""

from gateway.accounting.record import Accounting, Record, outcome_of
from gateway.accounting.tracing import Telemetry
from gateway.accounting.usage import UsageTally

__all__ = ["Accounting", "Record", "Telemetry", "UsageTally", "outcome_of"]
