"""The WebSocket side of calls: wire messages and the widget's and operators' sockets."""
