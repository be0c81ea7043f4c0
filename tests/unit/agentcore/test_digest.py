"""agentcore/digest.py: the one place digests change form."""

from __future__ import annotations

import pytest

from agentcore import digest

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("given", [HEX, "sha256:" + HEX, HEX.upper(), " sha256:" + HEX + "\n"])
def test_either_form_normalises_to_prefixed_lowercase(given: str) -> None:
    assert digest.normalise(given) == "sha256:" + HEX
    assert digest.bare(given) == HEX


@pytest.mark.parametrize("bad", ["", "sha256:", HEX[:-1], HEX + "0", "md5:" + HEX, "sha256:" + "g" * 64])
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        digest.normalise(bad)
