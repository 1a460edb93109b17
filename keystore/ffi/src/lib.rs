//! The PKCS#11 calls that the `cryptoki` crate (0.12) cannot make:
//!
//! - creating a key whose template holds an *array* attribute: the
//!   key-encryption key's `CKA_UNWRAP_TEMPLATE`, which forces every key it
//!   unwraps to be sensitive and non-extractable (without it, anyone with the
//!   user PIN could unwrap a user's blob as an extractable key and read the
//!   private key);
//! - mechanisms `cryptoki` has no name for: `CKM_AES_KEY_WRAP_KWP` (RFC 5649,
//!   PKCS#11 3.0), which modules such as kryoptic offer instead of the older
//!   `CKM_AES_KEY_WRAP_PAD` that SoftHSM 2.6 implements as RFC 5649;
//!   with the token's own mechanism list, unfiltered.
//!
//! All of inkan's `unsafe` code is in this crate. The module is opened a
//! second time by path (`dlopen` hands back the library the `cryptoki`
//! context already loaded and initialised, so its sessions are this
//! library's sessions) and called through its function list, as PKCS#11
//! defines (a module need not export each function as a symbol: kryoptic
//! exports only the list).

use std::path::Path;

use cryptoki::context::Function;
use cryptoki::error::{Error, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::{
    CKA_ALLOWED_MECHANISMS, CKA_UNWRAP_TEMPLATE, CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_MECHANISM, CK_MECHANISM_TYPE,
    CK_OBJECT_HANDLE, CK_ULONG,
};

/// `CKM_AES_KEY_WRAP_PAD` (0x210A): RFC 5649 in SoftHSM 2.6.
pub const CKM_AES_KEY_WRAP_PAD: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_PAD;
/// `CKM_AES_KEY_WRAP_KWP` (0x210B): RFC 5649 as PKCS#11 3.0 names it.
pub const CKM_AES_KEY_WRAP_KWP: CK_MECHANISM_TYPE = cryptoki_sys::CKM_AES_KEY_WRAP_KWP;

/// A PKCS#11 module's function list.
pub struct Module {
    _library: cryptoki_sys::Pkcs11,
    list: *const CK_FUNCTION_LIST,
}

// SAFETY: `list` points to the module's function table, which is immutable
// and lives as long as the module is loaded (`_library` keeps it loaded). The
// functions themselves are called from many threads, as PKCS#11 allows for a
// module initialised with CKF_OS_LOCKING_OK (as `cryptoki` initialises it).
unsafe impl Send for Module {}
// SAFETY: as for Send: the table is read-only.
unsafe impl Sync for Module {}

impl Module {
    /// The function list of the module at `path`, which `cryptoki` must have
    /// loaded and initialised (the keystore does, before it calls this).
    pub fn open(path: &Path) -> Result<Module, Error> {
        // SAFETY: loading the module runs its initialisers, which ran already
        // when `cryptoki` loaded this path: this takes another reference.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path.as_os_str()) }.map_err(Error::LibraryLoading)?;
        let get_list = library.C_GetFunctionList.as_ref().map_err(|_| Error::NullFunctionPointer)?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes a pointer to the module's static list.
        Rv::from(unsafe { get_list(&mut list) }).into_result(Function::GetFunctionList)?;
        if list.is_null() {
            return Err(Error::NullFunctionPointer);
        }
        Ok(Module { _library: library, list })
    }

    fn functions(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: non-null (checked in `open`), and valid while `_library` is loaded.
        unsafe { &*self.list }
    }

    /// The slot's mechanisms, as raw numbers (also those `cryptoki` has no name for).
    pub fn mechanisms(&self, slot: Slot) -> Result<Vec<CK_MECHANISM_TYPE>, Error> {
        let f = self.functions().C_GetMechanismList.ok_or(Error::NullFunctionPointer)?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a null list asks for the count only.
        Rv::from(unsafe { f(slot.id(), std::ptr::null_mut(), &mut count) }).into_result(Function::GetMechanismList)?;
        let mut out = vec![0 as CK_MECHANISM_TYPE; count as usize];
        // SAFETY: `out` has room for `count` entries.
        Rv::from(unsafe { f(slot.id(), out.as_mut_ptr(), &mut count) }).into_result(Function::GetMechanismList)?;
        out.truncate(count as usize);
        Ok(out)
    }

    /// `C_GenerateKey(mechanism, template + CKA_ALLOWED_MECHANISMS = allowed +
    /// CKA_UNWRAP_TEMPLATE = unwrap_template)` on `session`, a session of this
    /// module; returns the new key.
    pub fn generate_key_with_unwrap_template(
        &self,
        session: &Session,
        mechanism: &Mechanism,
        template: &[Attribute],
        allowed: &[CK_MECHANISM_TYPE],
        unwrap_template: &[Attribute],
    ) -> Result<ObjectHandle, Error> {
        // The CK_ATTRIBUTEs point into `template`, `allowed` and
        // `unwrap_template`, which outlive the call.
        let mut inner: Vec<CK_ATTRIBUTE> = unwrap_template.iter().map(CK_ATTRIBUTE::from).collect();
        let mut allowed = allowed.to_vec();
        let mut outer: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
        outer.push(CK_ATTRIBUTE {
            type_: CKA_ALLOWED_MECHANISMS,
            pValue: allowed.as_mut_ptr().cast(),
            ulValueLen: (allowed.len() * std::mem::size_of::<CK_MECHANISM_TYPE>()) as CK_ULONG,
        });
        outer.push(CK_ATTRIBUTE {
            type_: CKA_UNWRAP_TEMPLATE,
            pValue: inner.as_mut_ptr().cast(),
            ulValueLen: (inner.len() * std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG,
        });
        let mut mechanism = CK_MECHANISM::from(mechanism);
        let mut handle: CK_OBJECT_HANDLE = 0;
        let generate = self.functions().C_GenerateKey.ok_or(Error::NullFunctionPointer)?;
        // SAFETY: a session of this module (alive for the call), a mechanism
        // and attributes whose pointers are valid for the call, an out handle.
        let rv = unsafe {
            generate(session.handle(), &mut mechanism, outer.as_mut_ptr(), outer.len() as CK_ULONG, &mut handle)
        };
        Rv::from(rv).into_result(Function::GenerateKey)?;
        // SAFETY: the module just returned this handle for a new object.
        Ok(unsafe { ObjectHandle::new_from_raw(handle) })
    }

    /// `C_WrapKey` with a parameterless mechanism given by number.
    pub fn wrap_key(
        &self,
        session: &Session,
        mechanism: CK_MECHANISM_TYPE,
        wrapping: ObjectHandle,
        key: ObjectHandle,
    ) -> Result<Vec<u8>, Error> {
        let wrap = self.functions().C_WrapKey.ok_or(Error::NullFunctionPointer)?;
        let mut mech = CK_MECHANISM { mechanism, pParameter: std::ptr::null_mut(), ulParameterLen: 0 };
        let mut len: CK_ULONG = 0;
        // SAFETY: a null output asks for the length.
        Rv::from(unsafe {
            wrap(session.handle(), &mut mech, wrapping.handle(), key.handle(), std::ptr::null_mut(), &mut len)
        })
        .into_result(Function::WrapKey)?;
        let mut out = vec![0u8; len as usize];
        // SAFETY: `out` has room for `len` bytes.
        Rv::from(unsafe {
            wrap(session.handle(), &mut mech, wrapping.handle(), key.handle(), out.as_mut_ptr(), &mut len)
        })
        .into_result(Function::WrapKey)?;
        out.truncate(len as usize);
        Ok(out)
    }

    /// `C_UnwrapKey` with a parameterless mechanism given by number.
    pub fn unwrap_key(
        &self,
        session: &Session,
        mechanism: CK_MECHANISM_TYPE,
        unwrapping: ObjectHandle,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<ObjectHandle, Error> {
        let unwrap = self.functions().C_UnwrapKey.ok_or(Error::NullFunctionPointer)?;
        let mut mech = CK_MECHANISM { mechanism, pParameter: std::ptr::null_mut(), ulParameterLen: 0 };
        let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
        let mut wrapped = wrapped.to_vec();
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: a session of this module, pointers valid for the call, an out handle.
        let rv = unsafe {
            unwrap(
                session.handle(),
                &mut mech,
                unwrapping.handle(),
                wrapped.as_mut_ptr(),
                wrapped.len() as CK_ULONG,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut handle,
            )
        };
        Rv::from(rv).into_result(Function::UnwrapKey)?;
        // SAFETY: the module just returned this handle for a new object.
        Ok(unsafe { ObjectHandle::new_from_raw(handle) })
    }
}
