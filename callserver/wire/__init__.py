"""What travels on the sockets: inbound frames (`inbound`), outbound frames (`outbound`), and the codes
and reasons both sides share (`vocabulary`). Imports nothing of the domain, aiohttp or aiortc."""
