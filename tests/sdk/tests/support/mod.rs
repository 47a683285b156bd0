//! What every SDK test stands on: the service as a child process, the identity provider that
//! signs its tokens, the Bitwarden server endpoints the SDK calls besides the Key Connector,
//! and SDK clients that carry a user's token.

mod bitwarden_server;
mod idp;
mod sdk;
mod service;

pub use bitwarden_server::BitwardenServer;
pub use idp::{TestIdp, unreachable_url};
pub use sdk::SdkUser;
pub use service::Service;
