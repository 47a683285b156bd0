//! Integration tests: the real router on port 0, a real test identity provider, real stores.
//! Run by [`harness`], which counts a test whose backend is absent as ignored, not passed.

mod auth;
#[cfg(feature = "awskms")]
mod awskms;
mod azure_storage;
#[cfg(feature = "azurekv")]
mod azurekv;
mod backup;
mod binary;
mod certificate_store;
mod certificates;
mod compat;
mod connections;
mod container;
mod cors;
mod files;
#[cfg(feature = "gcpkms")]
mod gcpkms;
mod harness;
mod https;
mod image;
mod kubernetes;
mod lifecycle;
mod openapi;
mod operations;
mod outage;
mod panics;
#[cfg(feature = "pkcs11")]
mod pkcs11;
mod quickstart;
mod recovery;
mod replicas;
mod stores;
mod support;
mod user_keys;
mod vault;
mod vault_transit;

fn main() -> std::process::ExitCode {
    let arguments = libtest_mimic::Arguments::from_args();
    let mut tests = Vec::new();
    tests.extend(auth::tests());
    #[cfg(feature = "awskms")]
    tests.extend(awskms::tests());
    tests.extend(azure_storage::tests());
    #[cfg(feature = "azurekv")]
    tests.extend(azurekv::tests());
    tests.extend(backup::tests());
    tests.extend(binary::tests());
    tests.extend(certificate_store::tests());
    tests.extend(certificates::tests());
    tests.extend(compat::tests());
    tests.extend(connections::tests());
    tests.extend(container::tests());
    tests.extend(cors::tests());
    tests.extend(files::tests());
    tests.extend(harness::tests());
    #[cfg(feature = "gcpkms")]
    tests.extend(gcpkms::tests());
    tests.extend(https::tests());
    tests.extend(image::tests());
    tests.extend(kubernetes::tests());
    tests.extend(lifecycle::tests());
    tests.extend(openapi::tests());
    tests.extend(operations::tests());
    tests.extend(outage::tests());
    tests.extend(panics::tests());
    #[cfg(feature = "pkcs11")]
    tests.extend(pkcs11::tests());
    tests.extend(quickstart::tests());
    tests.extend(recovery::tests());
    tests.extend(replicas::tests());
    tests.extend(stores::tests());
    tests.extend(stores::sqlite_store::tests());
    tests.extend(stores::json_store::tests());
    tests.extend(stores::postgresql_store::tests());
    tests.extend(stores::mysql_store::tests());
    tests.extend(stores::sqlserver_store::tests());
    tests.extend(user_keys::tests());
    tests.extend(vault::tests());
    tests.extend(vault_transit::tests());
    let trials = tests.into_iter().map(harness::Test::into_trial).collect();
    libtest_mimic::run(&arguments, trials).exit_code()
}
