"""The page's limits that need no trained model and no browser: --max-upload-mb is a
positive finite number of MB, and an upload whose Content-Length is negative is refused (400)
before the server reads anything (tests/test_page.py runs the whole page on a tiny study)."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from stages.lib.params import UserError
from stages.tools import page


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-3"])
def test_max_upload_mb_must_be_positive_and_finite(value):
    with pytest.raises(UserError) as refused:
        page.parse_args([f"--max-upload-mb={value}"])
    assert str(refused.value) == f"--max-upload-mb {float(value)}: must be a positive, finite number of MB"
    assert page.parse_args(["--max-upload-mb", "0.5"]).max_upload_mb == 0.5


def test_a_negative_content_length_is_refused_before_reading():
    # No Study: the refusal must come before the handler touches the models or the body.
    server = page.serve("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        connection.putrequest("POST", "/api/classify?name=a.jpg")
        connection.putheader("Content-Length", "-5")
        connection.endheaders()  # no body: a server reading to the end would wait for the timeout
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 400
        assert answer == {"file": "a.jpg", "token": None, "results": [],
                          "error": "Content-Length -5: must be the body's size in bytes"}
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
