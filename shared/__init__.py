"""Code shared by the Markr functions: the domain, its use cases and the adapters they use."""
