//! PKCS#12 files as operators bring them: made by OpenSSL 3 (default and `-legacy`), in the
//! shape .NET exports, with and without password, RSA 2048 to 4096. Each is loaded by the
//! `certificate` provider and must unwrap a key that OpenSSL wrapped with RSA-OAEP-SHA1,
//! exactly as upstream's certificate provider wraps the symmetric key.

use key_connector::config::SettingsGroup;
use std::path::Path;

use key_connector::keys::RsaKeyProvider;
use key_connector::keys::certificate::CertificateKeyProvider;
use key_connector::keys::certificate::CertificateSettings;

use crate::skip_or_fail;
use crate::support::tls::{export_pfx, openssl, openssl_available};

/// `(file name, password, extra export arguments)`.
const VARIANTS: &[(&str, Option<&str>, &[&str])] = &[
    ("openssl3-default.pfx", Some("pa$$ word"), &[]),
    ("openssl3-legacy.pfx", Some("legacy"), &["-legacy"]),
    (
        "dotnet-export.pfx",
        Some("dotnet"),
        &[
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
            "-iter",
            "2000",
        ],
    ),
    ("empty-password.pfx", Some(""), &[]),
    (
        "no-encryption.pfx",
        Some(""),
        &["-keypbe", "NONE", "-certpbe", "NONE"],
    ),
];

async fn unwraps_what_openssl_wrapped(dir: &Path, file: &str, password: Option<&str>) {
    let provider = CertificateKeyProvider::open(
        &CertificateSettings::Filesystem {
            path: dir.join(file),
            password: password
                .filter(|p| !p.is_empty())
                .map(|p| p.to_owned().into()),
        },
        SettingsGroup::Main,
    )
    .await
    .unwrap_or_else(|e| panic!("{file}: {e}"));
    let secret: Vec<u8> = (0u8..32).collect();
    std::fs::write(dir.join("secret.bin"), &secret).unwrap();
    openssl(
        dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "public.pem",
            "-in",
            "secret.bin",
            "-out",
            "wrapped.bin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-pkeyopt",
            "rsa_mgf1_md:sha1",
        ],
    );
    let wrapped = std::fs::read(dir.join("wrapped.bin")).unwrap();
    let unwrapped = provider.unwrap_symmetric_key(&wrapped).await.unwrap();
    assert_eq!(&unwrapped[..], &secret[..], "{file}");
    // And the provider's own wrapping is what OpenSSL unwraps with the private key.
    let ours = provider.wrap_symmetric_key(&secret).await.unwrap();
    std::fs::write(dir.join("ours.bin"), ours).unwrap();
    openssl(
        dir,
        &[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            "key.pem",
            "-in",
            "ours.bin",
            "-out",
            "back.bin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-pkeyopt",
            "rsa_mgf1_md:sha1",
        ],
    );
    assert_eq!(
        std::fs::read(dir.join("back.bin")).unwrap(),
        secret,
        "{file}"
    );
}

async fn every_common_pkcs12_variant_and_rsa_size_unwraps() {
    if !openssl_available() {
        skip_or_fail!("the openssl command is not installed");
    }
    for bits in ["2048", "3072", "4096"] {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        openssl(dir, &["genrsa", "-out", "key.pem", bits]);
        openssl(
            dir,
            &[
                "req", "-x509", "-new", "-key", "key.pem", "-out", "cert.pem", "-subj", "/CN=kc",
                "-days", "30",
            ],
        );
        openssl(
            dir,
            &["pkey", "-in", "key.pem", "-pubout", "-out", "public.pem"],
        );
        for (file, password, extra) in VARIANTS {
            export_pfx(
                dir,
                "key.pem",
                "cert.pem",
                file,
                password.unwrap_or(""),
                extra,
            );
            unwraps_what_openssl_wrapped(dir, file, *password).await;
        }
    }
}

async fn unusable_certificate_files_are_refused_with_the_reason() {
    if !openssl_available() {
        skip_or_fail!("the openssl command is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(d, &["genrsa", "-out", "key.pem", "2048"]);
    openssl(
        d,
        &[
            "req", "-x509", "-new", "-key", "key.pem", "-out", "cert.pem", "-subj", "/CN=kc",
            "-days", "30",
        ],
    );
    export_pfx(d, "key.pem", "cert.pem", "good.pfx", "right", &[]);
    openssl(
        d,
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "cert.pem",
            "-out",
            "nokey.pfx",
            "-passout",
            "pass:right",
        ],
    );
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ec.pem",
            "-out",
            "ec-cert.pem",
            "-subj",
            "/CN=ec",
            "-days",
            "30",
        ],
    );
    export_pfx(d, "ec.pem", "ec-cert.pem", "ec.pfx", "right", &[]);
    std::fs::write(d.join("garbage.pfx"), b"this is not a certificate").unwrap();
    // More key-derivation iterations than the reader accepts: not a password problem.
    export_pfx(
        d,
        "key.pem",
        "cert.pem",
        "many-iterations.pfx",
        "right",
        &["-iter", "1100000"],
    );
    // Too small for the RSA implementation: the message says which sizes work.
    openssl(d, &["genrsa", "-out", "small.pem", "1024"]);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "small.pem",
            "-out",
            "small.crt",
            "-subj",
            "/CN=small",
            "-days",
            "30",
        ],
    );
    export_pfx(d, "small.pem", "small.crt", "small.pfx", "right", &[]);

    let cases: &[(&str, Option<&str>, &str)] = &[
        ("good.pfx", Some("wrong"), "password"),
        ("good.pfx", None, "password"),
        ("missing.pfx", Some("right"), "cannot read"),
        ("garbage.pfx", Some("right"), "not a PKCS#12"),
        ("nokey.pfx", Some("right"), "no private key"),
        ("ec.pfx", Some("right"), "RSA"),
        ("many-iterations.pfx", Some("right"), "1,000,000 iterations"),
        ("small.pfx", Some("right"), "2048 to 8192 bits"),
    ];
    for (file, password, needle) in cases {
        let error = CertificateKeyProvider::open(
            &CertificateSettings::Filesystem {
                path: d.join(file),
                password: password.map(|p| p.to_owned().into()),
            },
            SettingsGroup::Main,
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{file} must be refused"))
        .to_string();
        assert!(error.contains(needle), "{file}: {error}");
        assert!(
            !error.contains("wrong") || *needle != "password",
            "the password is never echoed: {error}"
        );
    }
}

crate::tests! {
    current_thread: [
        every_common_pkcs12_variant_and_rsa_size_unwraps,
        unusable_certificate_files_are_refused_with_the_reason,
    ],
}
