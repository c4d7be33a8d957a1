"""The PaaS's pure logic: how a stack rolls from one release to another (rollout.py),
and what a git host's push delivery says and whether its secret signed it (webhooks.py).

The database side (apps, stacks, releases, deploys) is db/paas*.py; the API and the
deploy controller are api/apps.py and api/deploys.py. See README.md in this package.
"""
