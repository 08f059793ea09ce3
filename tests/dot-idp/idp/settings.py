"""Django settings of the test IdP. serve.py sets the DOT_IDP_* variables.

OpenID Connect is on with RS256 ID tokens and PKCE required (DOT's default),
the scopes the console asks for, and RP-initiated logout that ends the IdP
session without a prompt when the console sends a valid id_token_hint.
"""

import os
from pathlib import Path

ISSUER = os.environ["DOT_IDP_ISSUER"]
GROUPS_IN = os.environ.get("DOT_IDP_GROUPS_IN", "id-token")

# A test IdP on loopback: nothing here protects anything real.
SECRET_KEY = "doorwatch-test-idp-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
    "idp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "idp.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["DOT_IDP_DB"],
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "/accounts/login/"

# The console runs on another port of the same host, and cookies do not
# care about ports: names of our own keep the two apart in a reader's eyes.
SESSION_COOKIE_NAME = "dot_idp_session"
CSRF_COOKIE_NAME = "dot_idp_csrftoken"

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": Path(os.environ["DOT_IDP_KEY_FILE"]).read_text(),
    "PKCE_REQUIRED": True,
    # S256 only: the "plain" method is refused (RFC 9700).
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your user name",
        "email": "Your e-mail address",
        "groups": "The groups you are in",
    },
    "OAUTH2_VALIDATOR_CLASS": {
        "id-token": "idp.claims.GroupsInIdToken",
        "userinfo": "idp.claims.GroupsInUserinfoOnly",
    }[GROUPS_IN],
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "OIDC_RP_INITIATED_LOGOUT_STRICT_REDIRECT_URIS": True,
}

# Requests, refusals and errors go to stderr (serve.py's log).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "INFO"},
        "oauth2_provider": {"handlers": ["stderr"], "level": "DEBUG"},
        "idp": {"handlers": ["stderr"], "level": "INFO"},
    },
}
