//! Small data objects an application keeps in the token (`CKO_DATA`, on the
//! token, private: reading, making or destroying one takes the user PIN, so
//! whoever can write the database but not use the token can neither forge
//! nor remove one). They are never modified (SoftHSM keeps a data object's
//! `CKA_VALUE` read-only): a new state is a new object, and the caller
//! destroys the older ones once it exists, so that a kill at any moment
//! leaves the old state or the new one.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::Keystore;
use crate::error::{from_cryptoki, Result};

/// A data object of an application: its label and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataObject {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_VALUE`.
    pub value: Vec<u8>,
}

fn template(application: &str, label: Option<&str>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Application(application.as_bytes().to_vec()),
    ];
    t.extend(label.map(|l| Attribute::Label(l.as_bytes().to_vec())));
    t
}

/// Label and value of an object; `None` if another process destroyed it meanwhile.
fn read(session: &Session, handle: ObjectHandle) -> Result<Option<DataObject>> {
    let attributes = match session.get_attributes(handle, &[AttributeType::Label, AttributeType::Value]) {
        Ok(a) => a,
        Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => return Ok(None),
        Err(e) => return Err(from_cryptoki(e)),
    };
    let (mut label, mut value) = (None, None);
    for a in attributes {
        match a {
            Attribute::Label(l) => label = Some(l),
            Attribute::Value(v) => value = Some(v),
            _ => {}
        }
    }
    Ok(label.zip(value).map(|(l, v)| DataObject { label: String::from_utf8_lossy(&l).into_owned(), value: v }))
}

impl Keystore {
    /// Every data object of `application` (one search).
    pub fn data_objects(&self, application: &str) -> Result<Vec<DataObject>> {
        self.with_session(|session| {
            let _reading = self.lock.shared()?;
            let found = session.find_objects(&template(application, None)).map_err(from_cryptoki)?;
            let mut out = Vec::with_capacity(found.len());
            for handle in found {
                out.extend(read(session, handle)?);
            }
            Ok(out)
        })
    }

    /// Makes a data object of `application` (not modifiable).
    pub fn create_data_object(&self, application: &str, label: &str, value: &[u8]) -> Result<()> {
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            let mut t = template(application, Some(label));
            t.extend([Attribute::Value(value.to_vec()), Attribute::Modifiable(false)]);
            session.create_object(&t).map(|_| ()).map_err(from_cryptoki)
        })
    }

    /// Destroys the objects of `application` labelled `label` whose value
    /// `drop` selects; returns how many went (one another process destroyed
    /// meanwhile counts as gone).
    pub fn prune_data_objects(&self, application: &str, label: &str, drop: &dyn Fn(&[u8]) -> bool) -> Result<usize> {
        self.with_session(|session| {
            let _writing = self.lock.exclusive()?;
            let mut gone = 0;
            for handle in session.find_objects(&template(application, Some(label))).map_err(from_cryptoki)? {
                let Some(object) = read(session, handle)? else { continue };
                if !drop(&object.value) {
                    continue;
                }
                match session.destroy_object(handle) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => gone += 1,
                    Err(e) => return Err(from_cryptoki(e)),
                }
            }
            Ok(gone)
        })
    }
}
