//! Definitions of the bunite 0.10 framework caps (PROTOCOL §14), so a Rust peer can call a
//! bunite host's runtime: `conn.runtime()` is a client of [`runtime`], and its sub-cap
//! methods return clients of the other definitions here.
//!
//! PROTOCOL §14 names the `surface` and `reporting` sub-caps without listing their methods;
//! their definitions here have no methods, and their clients call any method by name.

use std::sync::{Arc, OnceLock};

use crate::schema::{CapDef, CapDefRef, MethodDef, Returns};

macro_rules! cached {
    ($(#[$doc:meta])* $fn:ident, $build:expr) => {
        $(#[$doc])*
        pub fn $fn() -> Arc<CapDef> {
            static DEF: OnceLock<Arc<CapDef>> = OnceLock::new();
            Arc::clone(DEF.get_or_init(|| $build))
        }
    };
}

fn sub(name: &str, cap: fn() -> Arc<CapDef>) -> MethodDef {
    MethodDef::call(name)
        .idempotent()
        .returns(Returns::Cap(CapDefRef::Lazy(cap)))
}

cached!(
    /// `bunite.Runtime`, the peer's cap-id 1.
    runtime,
    CapDef::builder("bunite.Runtime")
        .method(sub("window", window))
        .method(sub("dialogs", dialogs))
        .method(sub("clipboard", clipboard))
        .method(sub("shell", shell))
        .method(sub("surface", surface))
        .method(sub("reporting", reporting))
        .method(MethodDef::call("appName").idempotent())
        .method(MethodDef::call("appVersion").idempotent())
        .method(MethodDef::call("theme").idempotent())
        .method(MethodDef::stream("themeWatch"))
        .build()
);

cached!(
    /// `bunite.Window`: `create` (→ BrowserWindow), `list` (→ array), `focus`, `close`.
    window,
    CapDef::builder("bunite.Window")
        .method(MethodDef::call("create").returns(Returns::Cap(CapDefRef::Lazy(browser_window))))
        .method(MethodDef::call("list").returns(Returns::CapArray(CapDefRef::Lazy(browser_window))))
        .method(MethodDef::call("focus"))
        .method(MethodDef::call("close"))
        .build()
);

cached!(
    /// `bunite.BrowserWindow`: `focus`, `close`, `setBounds`, `setTitle`, `id`, `label`.
    browser_window,
    ["focus", "close", "setBounds", "setTitle", "id", "label"]
        .into_iter()
        .fold(CapDef::builder("bunite.BrowserWindow"), |b, m| b.method(MethodDef::call(m)))
        .build()
);

cached!(
    /// `bunite.Dialogs`: `openFile` (→ array of FileRef), `saveFile` (→ FileRef), `showMessage`.
    dialogs,
    CapDef::builder("bunite.Dialogs")
        .method(MethodDef::call("openFile").returns(Returns::CapArray(CapDefRef::Lazy(file_ref))))
        .method(MethodDef::call("saveFile").returns(Returns::Cap(CapDefRef::Lazy(file_ref))))
        .method(MethodDef::call("showMessage"))
        .build()
);

cached!(
    /// `bunite.FileRef`: `text`, `bytes`, `path`, and `revoke`, its disposal method.
    file_ref,
    ["text", "bytes", "path", "revoke"]
        .into_iter()
        .fold(CapDef::builder("bunite.FileRef"), |b, m| b.method(MethodDef::call(m)))
        .disposal("revoke")
        .build()
);

cached!(
    /// `bunite.Clipboard`: `readText`, `writeText`, `readBytes`, `writeBytes`.
    clipboard,
    ["readText", "writeText", "readBytes", "writeBytes"]
        .into_iter()
        .fold(CapDef::builder("bunite.Clipboard"), |b, m| b.method(MethodDef::call(m)))
        .build()
);

cached!(
    /// `bunite.Shell`: `openExternal`, `showItemInFolder`.
    shell,
    CapDef::builder("bunite.Shell")
        .method(MethodDef::call("openExternal"))
        .method(MethodDef::call("showItemInFolder"))
        .build()
);

cached!(
    /// `bunite.Surface` (methods not specified by PROTOCOL §14).
    surface,
    CapDef::builder("bunite.Surface").build()
);

cached!(
    /// `bunite.Reporting` (methods not specified by PROTOCOL §14).
    reporting,
    CapDef::builder("bunite.Reporting").build()
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MethodKind;

    #[test]
    fn the_runtime_lists_its_sub_caps_and_kinds() {
        let rt = runtime();
        let win = rt.method("window").unwrap();
        assert!(win.is_idempotent());
        assert_eq!(win.return_shape().cap().unwrap().name(), "bunite.Window");
        assert_eq!(rt.method("themeWatch").unwrap().kind(), MethodKind::Stream);
        assert!(rt.method("appName").unwrap().is_idempotent());
        assert_eq!(file_ref().disposal(), Some("revoke"));
        let list = window().method("list").unwrap().return_shape().clone();
        assert!(matches!(list, Returns::CapArray(_)));
        assert_eq!(list.cap().unwrap().name(), "bunite.BrowserWindow");
        assert!(Arc::ptr_eq(&runtime(), &runtime()));
    }
}
