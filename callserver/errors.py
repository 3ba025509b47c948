"""Domain errors, each with a stable machine-readable code next to its human message."""


class CallserverError(Exception):
    """Base of the errors the domain raises on purpose; `code` is stable, the message is for people."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CallserverError):
    code = "not_found"


class UnknownSite(NotFound):
    code = "unknown_site"


class OriginNotAllowed(CallserverError):
    code = "origin_not_allowed"


class UnknownCall(NotFound):
    code = "unknown_call"


class NotYourCall(CallserverError):
    code = "not_your_call"


class CallNotRinging(CallserverError):
    code = "call_not_ringing"


class CallInProgress(CallserverError):
    code = "call_in_progress"


class NoCall(CallserverError):
    code = "no_call"


class OperatorBusy(CallserverError):
    code = "operator_busy"


class NotOnline(CallserverError):
    code = "not_online"


class BadOffer(CallserverError):
    code = "bad_offer"


class AlreadyExists(CallserverError):
    code = "already_exists"


class InvalidInput(CallserverError):
    code = "invalid"


class BadResumeToken(CallserverError):
    code = "bad_resume_token"
