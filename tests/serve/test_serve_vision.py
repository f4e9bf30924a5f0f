"""Images in /v1/moderations: OpenAI's image_url content parts (data: URLs) through the real server app, on a tiny
scripted Llama Guard 3 Vision-format model whose verdict is decided by the pixels (tests/conftest.py tiny_vision)."""

import base64

import openai
import pytest
from openai.types import Moderation

from guard.serve.images import image_bytes


def sdk(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def data_url(path, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def parts(text, *urls):
    return [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]


@pytest.fixture(scope="module")
def vision_server(tiny_vision, serve_helpers):
    live_server, config_for = serve_helpers
    with live_server(config_for(tiny_vision["dir"], max_image_bytes=200_000)) as (url, app, _):
        yield url


def test_image_url_parts_are_judged_with_the_image(vision_server, tiny_vision):
    import guard

    client, text = sdk(vision_server), tiny_vision["text"]
    g = guard.load(tiny_vision["dir"])
    for name, flagged in (("unsafe", True), ("safe", False)):
        raw = client.moderations.with_raw_response.create(input=parts(text, data_url(tiny_vision[name])))
        (res,) = raw.http_response.json()["results"]
        m = Moderation.model_validate(res)  # OpenAI's own types
        expected = g.classify(text, image=tiny_vision[name])  # the library, same text and image file
        assert m.flagged is flagged and res["llama_guard"]["decision"] == expected.decision
        assert res["llama_guard"]["p_unsafe"] == pytest.approx(expected.p_unsafe, abs=1e-5)
        assert m.category_applied_input_types.violence == ["text", "image"]  # OpenAI allows image for these keys
        assert m.category_applied_input_types.hate == ["text"] and m.category_applied_input_types.harassment == []
    # the same text without the image is judged as text only, and answers "text" alone
    (res,) = client.moderations.with_raw_response.create(input=parts(text)).http_response.json()["results"]
    assert res["category_applied_input_types"]["violence"] == ["text"]


@pytest.mark.parametrize("url, match", [
    ("https://example.com/cat.png", "does not fetch 'https' URLs"),
    ("file:///etc/passwd", "does not fetch 'file' URLs"),
    ("data:text/plain;base64,aGVsbG8=", "media type must be image/"),
    ("data:image/png,rawbytes", "must be base64"),
    ("data:image/png;base64,not*base64!", "not valid base64"),
    ("data:image/png;base64", "needs a comma"),
    ("data:image/png;base64," + "A" * 400_000, "larger than the 200000 bytes"),
    ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "not an image Pillow can read"),
])
def test_bad_image_urls_are_a_clean_400(vision_server, tiny_vision, url, match):
    with pytest.raises(openai.BadRequestError, match=match) as e:
        sdk(vision_server).moderations.create(input=parts(tiny_vision["text"], url))
    assert e.value.body["type"] == "invalid_request_error"


def test_image_rules(vision_server, tiny_vision, client_for):
    c, text, url = client_for(vision_server), tiny_vision["text"], data_url(tiny_vision["unsafe"])

    def post(path, body):
        r = c.post(path, json=body)
        return r.status_code, r.json()["error"]["message"] if r.status_code != 200 else r.json()

    assert post("/v1/moderations", {"input": parts(text, url, url)})[1].endswith("at most one image per input (Llama Guard 3 Vision judges one image)")
    status, msg = post("/v1/moderations", {"input": [{"type": "image_url", "image_url": {"url": url}}]})
    assert status == 400 and "an image needs a text part" in msg
    status, msg = post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": parts(text, url)}]})
    assert status == 400 and "accepted by /v1/moderations only" in msg
    assert post("/v1/moderations", {"input": "a text-only request to a vision guard"})[0] == 200
    assert post("/v1/moderations", {"input": parts(text, url)})[0] == 200  # still serving after the bad requests


def test_text_only_model_refuses_an_image(unsafe_server, tiny_vision):
    with pytest.raises(openai.BadRequestError, match="text-only"):
        sdk(unsafe_server).moderations.create(input=parts("hello", data_url(tiny_vision["safe"])))


def test_image_bytes_unit():
    assert image_bytes("data:image/png;base64,aGVs\nbG8=") == b"hello"  # MIME line breaks are ignored
    assert image_bytes("data:IMAGE/JPEG;charset=x;BASE64,aGk=") == b"hi"
    with pytest.raises(ValueError, match="no image bytes"):
        image_bytes("data:image/png;base64,")
