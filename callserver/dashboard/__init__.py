"""The owner dashboard: call and chat logs, recordings, revenue, operators and sites."""
