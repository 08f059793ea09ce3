//! Sign-in with the campus identity provider over OpenID Connect: the
//! authorization code flow with PKCE, state and nonce, and ID-token
//! validation (signature, issuer, audience, expiry, nonce) by the
//! `openidconnect` crate. The HTTP client never follows redirects (a
//! redirect from the IdP's endpoints could aim it anywhere).
//!
//! The IdP's discovery document is fetched at start; if the IdP is down
//! then, the console still starts (the local admin may be needed exactly
//! then) and tries again at the next sign-in.

use doorwatch_process::secret::Secret;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use doorwatch_process::logging::error_chain;
use doorwatch_process::text;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdToken, IdTokenClaims, IdTokenFields, IssuerUrl, LogoutRequest,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, SubjectIdentifier, TokenResponse, UserInfoClaims,
    reqwest,
};
use tokio::sync::RwLock;

use crate::auth::{Role, User};
use crate::config::{OidcFiles, Roles, ValidOidc};

/// Every claim of the ID token beyond the standard ones, so the role
/// claim can be any name the campus uses.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CampusClaims(HashMap<String, serde_json::Value>);

impl AdditionalClaims for CampusClaims {}

type CampusTokenResponse = StandardTokenResponse<
    IdTokenFields<
        CampusClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The ID token, and its claims once verified.
type CampusIdToken = IdToken<
    CampusClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type CampusIdTokenClaims = IdTokenClaims<CampusClaims, CoreGenderClaim>;

type CampusClient = Client<
    CampusClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    CampusTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in failed. The user sees a generic page; this goes to the
/// log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    #[error("cannot fetch the identity provider's {0}")]
    Discovery(String),
    #[error("cannot fetch the identity provider's discovery document: not fetched yet")]
    NotDiscovered,
    #[error("the token request failed: {0}")]
    Token(String),
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    #[error("the ID token is not valid: {0}")]
    IdToken(String),
    #[error("user {user}: no {claim} claim in {looked} (is it behind a scope not asked for?)")]
    MissingClaim {
        claim: String,
        user: String,
        looked: Looked,
    },
    #[error("user {user}: the {claim} claim in {read_from} ({values}) maps to no doorwatch role")]
    NoRole {
        claim: String,
        user: String,
        values: String,
        read_from: ClaimSource,
    },
    #[error("the identity provider's userinfo request failed: {0}")]
    UserInfo(String),
    #[error("bad configuration: {0}")]
    Config(String),
}

impl OidcError {
    /// Who the IdP said the user was, when the refusal came after it did.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::MissingClaim { user, .. } | Self::NoRole { user, .. } => Some(user),
            _ => None,
        }
    }
}

/// Where the role claim's values were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSource {
    IdToken,
    /// The ID token had no such claim; the IdP's userinfo did.
    UserInfo,
}

impl std::fmt::Display for ClaimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::IdToken => "the ID token",
            Self::UserInfo => "userinfo",
        })
    }
}

/// Where the role claim was looked for, when it was nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    /// The ID token; the IdP names no userinfo endpoint.
    IdTokenOnly,
    IdTokenAndUserInfo,
}

impl std::fmt::Display for Looked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::IdTokenOnly => "the ID token (the identity provider offers no userinfo)",
            Self::IdTokenAndUserInfo => "the ID token or userinfo",
        })
    }
}

/// The role claim of one sign-in: its values and where they were read, or
/// where it was looked for in vain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Found(Vec<String>, ClaimSource),
    Missing(Looked),
}

/// A finished sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    /// The raw ID token, kept for the IdP's logout (`id_token_hint`).
    pub id_token: Secret,
}

/// A sign-in to start: send the browser to `url`, remember the rest.
#[derive(Debug)]
pub struct Start {
    pub url: String,
    pub state: Secret,
    pub nonce: Secret,
    pub pkce_verifier: Secret,
}

/// The console's OIDC client.
#[derive(Debug)]
pub struct Oidc {
    settings: ValidOidc,
    secret: Secret,
    redirect: String,
    http: reqwest::Client,
    discovered: RwLock<Option<(CampusClient, Option<EndSessionUrl>)>>,
    /// When the discovery document and key set were last fetched.
    fetched_at: std::sync::Mutex<Option<Instant>>,
}

/// How old the IdP's key set may get before the next sign-in fetches it
/// again: IdPs such as Entra ID rotate their keys routinely.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The least time between two fetches caused by an ID token signed with
/// a key the console does not know (a rotation since the last fetch).
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(10);

impl Oidc {
    /// Builds the client from the files `[oidc]` names (read and checked
    /// by [`crate::config::ValidConfig::read_files`]); `redirect` is
    /// PUBLIC_URL/auth/callback. No network yet.
    pub fn new(settings: ValidOidc, files: OidcFiles, redirect: String) -> Result<Self, OidcError> {
        let mut builder = reqwest::ClientBuilder::new()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10));
        for cert in files.extra_roots {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| OidcError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            settings,
            secret: files.client_secret.into(),
            redirect,
            http,
            discovered: RwLock::new(None),
            fetched_at: std::sync::Mutex::new(None),
        })
    }

    /// Fetches the discovery document and keys unless they are fresh. A
    /// failed refresh keeps the keys already known.
    pub async fn discover(&self) -> Result<(), OidcError> {
        if self.discovered.read().await.is_some() {
            if self.fetched_within(KEYS_MAX_AGE) {
                return Ok(());
            }
            if let Err(e) = self.fetch().await {
                tracing::warn!(issuer = %self.settings.issuer, error = %e, "cannot refresh the identity provider's keys; keeping the ones known");
            }
            return Ok(());
        }
        self.fetch().await
    }

    fn fetched_within(&self, age: Duration) -> bool {
        let fetched_at = self
            .fetched_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched_at.is_some_and(|at| at.elapsed() < age)
    }

    /// Fetches the discovery document and the key set.
    async fn fetch(&self) -> Result<(), OidcError> {
        *self
            .fetched_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                OidcError::Discovery(format!(
                    "{}/.well-known/openid-configuration or the key set (jwks_uri) it names: {}",
                    self.settings.issuer.trim_end_matches('/'),
                    error_chain(&e)
                ))
            })?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(self.redirect.clone())
            .map_err(|e| OidcError::Config(format!("redirect URL: {e}")))?;
        let client = CampusClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.secret.expose().to_owned())),
        )
        .set_redirect_uri(redirect);
        *self.discovered.write().await = Some((client, end_session));
        tracing::info!(issuer = %self.settings.issuer, "identity provider discovered");
        Ok(())
    }

    /// Starts a sign-in: a fresh state, nonce and PKCE pair.
    pub async fn start(&self) -> Result<Start, OidcError> {
        self.discover().await?;
        let guard = self.discovered.read().await;
        let (client, _) = guard.as_ref().ok_or(OidcError::NotDiscovered)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        // Exactly the scopes configured: an IdP that rejects scopes it
        // does not know would refuse everyone over one added here.
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Start {
            url: url.to_string(),
            state: state.secret().clone().into(),
            nonce: nonce.secret().clone().into(),
            pkce_verifier: verifier.secret().clone().into(),
        })
    }

    /// Finishes a sign-in: trades `code` for tokens and validates the ID
    /// token against the nonce and PKCE verifier of the pending sign-in.
    pub async fn finish(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<SignedIn, OidcError> {
        let response = {
            let guard = self.discovered.read().await;
            let (client, _) = guard.as_ref().ok_or(OidcError::NotDiscovered)?;
            client
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .map_err(|e| OidcError::Config(e.to_string()))?
                .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
                .request_async(&self.http)
                .await
                .map_err(|e| OidcError::Token(error_chain(&e)))?
        };
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match self.verify(id_token, &nonce).await {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if !self.fetched_within(UNKNOWN_KEY_REFETCH) => {
                // Signed with a key we do not know: the IdP rotated its
                // keys since we fetched them. Fetch once more and retry.
                tracing::info!(issuer = %self.settings.issuer, "ID token signed with an unknown key: fetching the identity provider's keys again");
                self.fetch().await?;
                self.verify(id_token, &nonce).await
            }
            other => other,
        }
        .map_err(|e| OidcError::IdToken(error_chain(&e)))?;
        let name = claims
            .preferred_username()
            .map(|n| n.as_str().to_owned())
            .or_else(|| claims.email().map(|e| e.as_str().to_owned()))
            .unwrap_or_else(|| claims.subject().as_str().to_owned());
        let claim = &self.settings.role_claim;
        let lookup = match claim_values(claims.additional_claims(), claim) {
            Some(values) => Lookup::Found(values, ClaimSource::IdToken),
            // Some IdPs put groups only in userinfo.
            None => {
                self.userinfo_claim(response.access_token(), claims.subject())
                    .await?
            }
        };
        let role = role_of(&self.settings.roles, claim, &name, lookup)?;
        Ok(SignedIn {
            user: User { name, role },
            id_token: id_token.to_string().into(),
        })
    }

    /// The role claim's values from the IdP's userinfo endpoint, for an
    /// ID token without the claim.
    async fn userinfo_claim(
        &self,
        access_token: &AccessToken,
        subject: &SubjectIdentifier,
    ) -> Result<Lookup, OidcError> {
        let guard = self.discovered.read().await;
        let Some((client, _)) = guard.as_ref() else {
            return Err(OidcError::NotDiscovered);
        };
        let Ok(request) = client.user_info(access_token.clone(), Some(subject.clone())) else {
            return Ok(Lookup::Missing(Looked::IdTokenOnly));
        };
        let info: UserInfoClaims<CampusClaims, CoreGenderClaim> = request
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
        Ok(
            match claim_values(info.additional_claims(), &self.settings.role_claim) {
                Some(values) => Lookup::Found(values, ClaimSource::UserInfo),
                None => Lookup::Missing(Looked::IdTokenAndUserInfo),
            },
        )
    }

    /// The ID token's claims, checked with the keys known now.
    async fn verify(
        &self,
        id_token: &CampusIdToken,
        nonce: &Nonce,
    ) -> Result<CampusIdTokenClaims, ClaimsVerificationError> {
        let guard = self.discovered.read().await;
        let Some((client, _)) = guard.as_ref() else {
            return Err(ClaimsVerificationError::Other("not discovered".into()));
        };
        id_token.claims(&client.id_token_verifier(), nonce).cloned()
    }

    /// Where to send the browser to end its IdP session too, if the IdP
    /// offers RP-initiated logout.
    pub async fn logout_url(&self, id_token: Option<&str>, after: &str) -> Option<String> {
        let guard = self.discovered.read().await;
        let (_, end_session) = guard.as_ref()?;
        let mut request = LogoutRequest::from(end_session.clone()?)
            .set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Ok(after) = PostLogoutRedirectUrl::new(after.to_owned()) {
            request = request.set_post_logout_redirect_uri(after);
        }
        let mut url = request.http_get_url();
        if let Some(token) = id_token {
            url.query_pairs_mut().append_pair("id_token_hint", token);
        }
        Some(url.to_string())
    }
}

/// The role that the claim `claim` of `user` grants, or why it grants
/// none, saying where the claim was read or looked for.
fn role_of(roles: &Roles, claim: &str, user: &str, lookup: Lookup) -> Result<Role, OidcError> {
    let user = text::printable_bounded(user, 200);
    match lookup {
        Lookup::Missing(looked) => Err(OidcError::MissingClaim {
            claim: claim.to_owned(),
            user,
            looked,
        }),
        Lookup::Found(values, read_from) => {
            roles
                .of(values.iter().map(String::as_str))
                .ok_or_else(|| OidcError::NoRole {
                    claim: claim.to_owned(),
                    user,
                    values: text::printable_bounded(&values.join(", "), 400),
                    read_from,
                })
        }
    }
}

/// The string values of claim `name` (a string, or a list of strings);
/// `None` when the token has no such claim.
fn claim_values(claims: &CampusClaims, name: &str) -> Option<Vec<String>> {
    match claims.0.get(name)? {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => Some(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_where_the_groups_were_read_or_looked_for() {
        let roles = Roles {
            analyst: ["doorwatch-analysts".to_owned()].into(),
            ..Roles::default()
        };
        let found = |values: &[&str], source| {
            Lookup::Found(values.iter().map(|v| (*v).to_owned()).collect(), source)
        };
        assert_eq!(
            role_of(
                &roles,
                "groups",
                "alice",
                found(&["doorwatch-analysts"], ClaimSource::UserInfo)
            )
            .expect("a role"),
            Role::Analyst
        );
        let refusal = |lookup| {
            role_of(&roles, "groups", "nobody", lookup)
                .expect_err("no role")
                .to_string()
        };
        // Groups read from userinfo were once reported as the ID token's.
        assert_eq!(
            refusal(found(&["staff"], ClaimSource::UserInfo)),
            "user nobody: the groups claim in userinfo (staff) maps to no doorwatch role"
        );
        assert_eq!(
            refusal(found(&[], ClaimSource::IdToken)),
            "user nobody: the groups claim in the ID token () maps to no doorwatch role"
        );
        // A claim missing from both was reported as "only in userinfo?".
        assert_eq!(
            refusal(Lookup::Missing(Looked::IdTokenAndUserInfo)),
            "user nobody: no groups claim in the ID token or userinfo (is it behind a scope not asked for?)"
        );
        assert!(
            refusal(Lookup::Missing(Looked::IdTokenOnly)).contains("offers no userinfo"),
            "{}",
            refusal(Lookup::Missing(Looked::IdTokenOnly))
        );
    }

    #[test]
    fn role_claims_may_be_a_string_or_a_list() {
        let claims: CampusClaims =
            serde_json::from_str(r#"{"groups": ["a", 3, "b"], "role": "admin"}"#).expect("json");
        assert_eq!(
            claim_values(&claims, "groups"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            claim_values(&claims, "role"),
            Some(vec!["admin".to_owned()])
        );
        assert_eq!(
            claim_values(&claims, "roles"),
            None,
            "a missing claim is not an empty one"
        );
    }
}
