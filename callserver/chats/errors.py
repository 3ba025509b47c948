"""Errors of the chat domain, each with a stable code (docs/signaling.md lists them)."""

from callserver.errors import CallserverError, NotFound


class MessageTooLong(CallserverError):
    code = "message_too_long"


class RateLimited(CallserverError):
    code = "rate_limited"


class NoChat(CallserverError):
    code = "no_chat"


class UnknownChat(NotFound):
    code = "unknown_chat"


class NotYourChat(CallserverError):
    code = "not_your_chat"


class ChatLimitReached(CallserverError):
    code = "chat_limit"


class NobodyOnline(CallserverError):
    code = "nobody_online"


class MailUnavailable(CallserverError):
    code = "mail_unavailable"


class EmptyMessage(CallserverError):
    code = "empty_message"


class UnknownMessage(NotFound):
    code = "unknown_message"
