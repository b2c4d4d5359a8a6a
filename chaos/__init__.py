"""Conservation runs: prove, from the queues alone, that no appointment event is lost under faults."""
