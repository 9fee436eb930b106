"""The instrumentation hook: Anthropic SDK middleware that turns each billed response into a cost span."""
