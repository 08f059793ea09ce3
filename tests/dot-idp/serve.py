#!/usr/bin/env python3
"""A second, independent OpenID provider for doorwatch's console tests:
django-oauth-toolkit (DOT) on Django, on 127.0.0.1 only.

  .venv/bin/python serve.py --port PORT --dir DIR --key KEY.pem \\
      --groups-in id-token|userinfo --client-id ID --client-secret SECRET \\
      --redirect-uri URI --post-logout-redirect-uri URI

--port 0 takes a free port. DIR holds the SQLite database, kept across
restarts, so the IdP can be restarted on the same port with another key
(a key rotation: only the new key is served) or another --groups-in.
KEY.pem is the RS256 signing key; a new 2048-bit RSA key is written there
if the file does not exist.

On every start it migrates the database and makes sure of its users and its
one client: a confidential client (code flow, PKCE, RS256, skip_authorization,
so there is no consent page) with the given redirect and post-logout
redirect URIs. The users (password "password-of-NAME", e-mail
NAME@campus.test) are ada (doorwatch-admins), alice (doorwatch-analysts),
victor (doorwatch-viewers) and nobody (no groups), as in tests/oidc.

The login page is /accounts/login/: form#login with inputs username and
password and the button #login-submit; a refusal shows #login-error.

It prints "dot idp signing key kid=KID" and then
"dot idp listening on http://127.0.0.1:PORT/o" (the issuer) once it serves.
Each ID token and userinfo answer is logged with its claim names (see
idp/claims.py). Stop it with SIGTERM.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

USERS = {
    "ada": ["doorwatch-admins"],
    "alice": ["doorwatch-analysts"],
    "victor": ["doorwatch-viewers"],
    "nobody": [],
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--groups-in", choices=["id-token", "userinfo"], default="id-token")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", required=True)
    parser.add_argument("--post-logout-redirect-uri", required=True)
    return parser.parse_args()


def ensure_key(path):
    """The RSA signing key at `path`, made first if missing."""
    if path.exists():
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def seed(args):
    """The users, their groups and the console's client, as the flags say."""
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import get_application_model

    for name, groups in USERS.items():
        user, created = User.objects.get_or_create(
            username=name, defaults={"email": f"{name}@campus.test"}
        )
        if created:
            user.set_password(f"password-of-{name}")
            user.save()
        user.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])

    Application = get_application_model()
    Application.objects.update_or_create(
        client_id=args.client_id,
        defaults={
            "name": "doorwatch console",
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "client_secret": args.client_secret,
            "hash_client_secret": True,
            "redirect_uris": args.redirect_uri,
            "post_logout_redirect_uris": args.post_logout_redirect_uri,
            "algorithm": Application.RS256_ALGORITHM,
            "skip_authorization": True,
        },
    )


def main():
    args = parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    ensure_key(args.key)

    # Listen first, so the issuer names the real port (--port 0).
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    httpd = ThreadedWSGIServer(("127.0.0.1", args.port), WSGIRequestHandler)
    issuer = f"http://127.0.0.1:{httpd.server_port}/o"
    os.environ["DJANGO_SETTINGS_MODULE"] = "idp.settings"
    os.environ["DOT_IDP_ISSUER"] = issuer
    os.environ["DOT_IDP_DB"] = str(args.dir / "idp.sqlite3")
    os.environ["DOT_IDP_KEY_FILE"] = str(args.key)
    os.environ["DOT_IDP_GROUPS_IN"] = args.groups_in

    import django

    django.setup()
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.settings import oauth2_settings
    from oauth2_provider.utils import jwk_from_pem

    call_command("migrate", verbosity=0, interactive=False)
    seed(args)
    httpd.set_app(get_wsgi_application())

    # SIGTERM stops the server cleanly (and frees the port for a restart).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    kid = jwk_from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY).thumbprint()
    print(f"dot idp signing key kid={kid}", flush=True)
    print(f"dot idp groups in {args.groups_in}", flush=True)
    print(f"dot idp listening on {issuer}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
