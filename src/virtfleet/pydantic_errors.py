"""pydantic's validation errors in virtfleet's words: one rule per error, as `must be ...`.

pydantic words a rule for a programmer ("Input should be greater than 0", "Input should be a
valid integer, unable to parse string as an integer"); virtfleet's one-line errors name the
field and then the rule (`--vcpus: must be greater than 0`). Every place that turns a
ValidationError into InvalidInput (the fleet file, the placement models, network specs, NIC
layouts, the API's 4xx bodies) takes the rule from `rule()`, so they all speak alike.

Works on the error dicts `ValidationError.errors()` returns: nothing here imports pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# pydantic's error type -> the rule, for types whose words need no context
_FIXED = {
    "missing": "missing: this field is required",
    "extra_forbidden": "unknown key",
    "json_invalid": "not valid JSON",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "none_required": "must be empty (null)",
    "ip_any_address": "must be an IPv4 or IPv6 address",
    "ip_v4_address": "must be an IPv4 address",
    "ip_v6_address": "must be an IPv6 address",
    "ip_v4_network": "must be an IPv4 network (192.168.0.0/24)",
    "ip_v6_network": "must be an IPv6 network",
    "ip_any_network": "must be an IPv4 or IPv6 network",
    "ip_v4_interface": "must be an IPv4 address with its prefix (10.0.0.1/24)",
    "ip_v6_interface": "must be an IPv6 address with its prefix",
    "ip_any_interface": "must be an IP address with its prefix",
}

# types whose rule names a bound pydantic gives in the error's `ctx`
_BOUNDED = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
    "string_pattern_mismatch": "must match {pattern}",
}

# our own validators' words arrive behind these
_OURS = ("Value error, ", "Assertion failed, ")


def rule(err: Mapping[str, Any]) -> str:
    """One pydantic error's rule in virtfleet's words (without the field)."""
    kind = str(err.get("type", ""))
    if kind in _FIXED:
        return _FIXED[kind]
    ctx = err.get("ctx") or {}
    if kind in _BOUNDED:
        try:
            return _BOUNDED[kind].format(**{k: _number(v) for k, v in ctx.items()})
        except (KeyError, IndexError):
            pass  # a pydantic without that context: word its own message below
    msg = str(err.get("msg", "invalid"))
    for prefix in _OURS:
        if msg.startswith(prefix):
            return msg.removeprefix(prefix)
    for theirs, ours in (("Input should be ", "must be "), ("Input should ", "must "),
                         ("Value should be ", "must be "), ("Input is not ", "is not "),
                         ("Value is not ", "is not ")):
        if msg.startswith(theirs):
            return ours + msg.removeprefix(theirs)
    return msg[:1].lower() + msg[1:]


def _number(value: object) -> object:
    """8.0 as 8: a float field's bound reads as the operator wrote it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
