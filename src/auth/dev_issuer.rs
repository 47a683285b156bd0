//! A development token issuer: OIDC discovery, JWKS and RS256 tokens. Not for production.
//!
//! Placeholder: see the authentication work item.
