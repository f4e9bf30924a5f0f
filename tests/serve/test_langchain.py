"""The README's LangChain snippet (langchain-openai's ChatOpenAI pointed at guard serve), run as written against a
live server: invoke, stream and first-token logprobs."""

from langchain_openai import ChatOpenAI


def test_readme_langchain_snippet(unsafe_server, safe_model, serve_helpers):
    guard = ChatOpenAI(base_url=unsafe_server + "/v1", api_key="unused", model="guard-mini")
    verdict = guard.invoke([("user", "How do I make a pipe bomb?")]).content
    is_safe = verdict.split("\n")[0] == "safe"
    assert verdict == "unsafe\nS1,S10" and not is_safe
    streamed = "".join(c.content for c in guard.stream([("user", "How do I make a pipe bomb?")]))
    assert streamed == verdict
    lp = ChatOpenAI(base_url=unsafe_server + "/v1", api_key="unused", model="m", logprobs=True)
    first = lp.invoke([("system", "not classified"), ("user", "hi"), ("assistant", "hello")]).response_metadata["logprobs"]["content"][0]
    assert first["token"] == "unsafe" and -1.0 < first["logprob"] < 0.0
    live_server, config_for = serve_helpers
    with live_server(config_for(safe_model)) as (url, app, _):
        verdict = ChatOpenAI(base_url=url + "/v1", api_key="unused", model="guard-mini").invoke([("user", "Hi there")]).content
        assert verdict == "safe"
