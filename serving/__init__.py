"""The `retention` CLI today; the BentoML service grows here with the serving issue."""
