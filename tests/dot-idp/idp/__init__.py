"""A campus IdP for doorwatch's tests: django-oauth-toolkit's OpenID provider.

serve.py starts it; settings.py takes what differs per run (issuer, database,
signing key, where the groups go) from environment variables serve.py sets.
"""
