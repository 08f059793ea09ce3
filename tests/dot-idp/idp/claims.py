"""Where the IdP puts a user's groups: in the ID token (and userinfo), or
only in userinfo, as some campus IdPs do. Either way `groups` is released
only with the `groups` scope. Each ID token and userinfo answer is logged
with the names of its claims, so a test can show where the groups were."""

import logging

from oauth2_provider.oauth2_validators import OAuth2Validator

log = logging.getLogger("idp.claims")


def groups_of(user):
    return sorted(user.groups.values_list("name", flat=True))


class GroupsInIdToken(OAuth2Validator):
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "groups"}

    def get_additional_claims(self, request):
        user = request.user
        return {
            "preferred_username": user.username,
            "email": user.email,
            "groups": groups_of(user),
        }

    def get_id_token_dictionary(self, token, token_handler, request):
        claims, expiration = super().get_id_token_dictionary(token, token_handler, request)
        log.info("id token for %s has claims %s", request.user.username, ",".join(sorted(claims)))
        return claims, expiration

    def get_userinfo_claims(self, request):
        claims = super().get_userinfo_claims(request)
        log.info("userinfo for %s has claims %s", request.user.username, ",".join(sorted(claims)))
        return claims


class GroupsInUserinfoOnly(GroupsInIdToken):
    def get_additional_claims(self, request):
        claims = super().get_additional_claims(request)
        del claims["groups"]
        return claims

    def get_userinfo_claims(self, request):
        claims = OAuth2Validator.get_userinfo_claims(self, request)
        if "groups" in request.scopes:
            claims["groups"] = groups_of(request.user)
        log.info("userinfo for %s has claims %s", request.user.username, ",".join(sorted(claims)))
        return claims
