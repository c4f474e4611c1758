//! OpenID discovery documents (`{login}/{domain}/v2.0/.well-known/openid-configuration`)
//! read into the tenant id their issuer names: never a panic, and what comes
//! out is always a lowercase tenant id.
#![no_main]
use libfuzzer_sys::fuzz_target;
use relay365::microsoft::claims;

fuzz_target!(|data: &[u8]| {
    if let Ok(tenant) = claims::tenant_from_discovery(data) {
        assert!(claims::is_tenant_id(&tenant), "{tenant}");
        assert_eq!(tenant, tenant.to_ascii_lowercase());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = claims::tenant_of_issuer(text);
        let _ = claims::domain_of(text);
    }
});
