"""What the routers share: job validation and submission (:mod:`.jobs`), and the OpenAI-compatible
completions logic (:mod:`.completions`) that both the route and the worker use."""
