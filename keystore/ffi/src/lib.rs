//! The one PKCS#11 call that the `cryptoki` crate (0.12) cannot make: creating
//! a key whose template holds an *array* attribute. inkan needs it for the
//! key-encryption key's `CKA_UNWRAP_TEMPLATE`, which forces every key
//! unwrapped by it to be sensitive and non-extractable: without it, anyone
//! with the user PIN could unwrap a user's blob as an extractable key and read
//! the private key.
//!
//! All of inkan's `unsafe` code is in this crate, and it is this one call. The
//! module is opened a second time by path (`dlopen` hands back the library the
//! `cryptoki` context already loaded and initialised, so its sessions are this
//! library's sessions), and `C_GenerateKey` is called on a session the caller
//! borrows from `cryptoki`.

use std::path::Path;

use cryptoki::context::Function;
use cryptoki::error::{Error, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{CKA_UNWRAP_TEMPLATE, CK_ATTRIBUTE, CK_MECHANISM, CK_OBJECT_HANDLE, CK_ULONG};

/// Calls `C_GenerateKey(mechanism, template + CKA_UNWRAP_TEMPLATE = unwrap_template)`
/// on `session`, which must belong to the module at `module`, and returns the new key.
pub fn generate_key_with_unwrap_template(
    module: &Path,
    session: &Session,
    mechanism: &Mechanism,
    template: &[Attribute],
    unwrap_template: &[Attribute],
) -> Result<ObjectHandle, Error> {
    // The CK_ATTRIBUTEs point into `template` and `unwrap_template`, which the
    // caller keeps alive across the call.
    let mut inner: Vec<CK_ATTRIBUTE> = unwrap_template.iter().map(CK_ATTRIBUTE::from).collect();
    let mut outer: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
    outer.push(CK_ATTRIBUTE {
        type_: CKA_UNWRAP_TEMPLATE,
        pValue: inner.as_mut_ptr().cast(),
        ulValueLen: (inner.len() * std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG,
    });
    let mut mechanism = CK_MECHANISM::from(mechanism);
    let mut handle: CK_OBJECT_HANDLE = 0;
    // SAFETY: loading the module runs its initialisers, which `cryptoki` has
    // already run for this path (the library is loaded and stays loaded, so
    // this only takes another reference to it).
    let library = unsafe { cryptoki_sys::Pkcs11::new(module.as_os_str()) }.map_err(Error::LibraryLoading)?;
    let generate = library.C_GenerateKey.as_ref().map_err(|_| Error::NullFunctionPointer)?;
    // SAFETY: C_GenerateKey's contract: a session handle of this library (from
    // `session`, alive for the call), a mechanism and an attribute array whose
    // pointers are valid for the call (`mechanism`, `outer`, `inner` and the
    // caller's attributes outlive it), and an output handle.
    let rv =
        unsafe { generate(session.handle(), &mut mechanism, outer.as_mut_ptr(), outer.len() as CK_ULONG, &mut handle) };
    Rv::from(rv).into_result(Function::GenerateKey)?;
    // SAFETY: the module just returned this handle for a new object.
    Ok(unsafe { ObjectHandle::new_from_raw(handle) })
}
