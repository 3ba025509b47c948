"""Outbound webhooks: what happens in the shop's conversations, posted (signed) to the shop's own URLs.

`subscriptions.py` keeps each site's URLs and secrets, `addresses.py` decides where a webhook may go
(no private networks unless allowed), `payloads.py` renders an event's data as the API does,
`deliveries.py` is the queue in the database, and `sender.py` the sink the domain publishes to and
the sender that works through the queue.
"""
