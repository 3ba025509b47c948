"""Who is on a shop's site right now: page views, value scores, the live board and invitations."""
