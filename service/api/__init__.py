"""HTTP layer: routes, error mapping, middleware and the embedded OpenAI API."""
