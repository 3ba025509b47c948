"""Reports built on the orders' revenue: where conversations come from (sources, campaigns)."""
