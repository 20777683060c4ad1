//! What a method yields: a call's `Ok` type and cap shape, or a stream's item type.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Path, ReturnType, Signature, Type};

use super::method::MethodAttrs;
use super::{Arg, Errors, Kind, Ret};
use crate::types;

/// Reads what the method yields: a call's `Ok` type and cap shape, or a stream's item.
pub(super) fn kind(
    sig: &Signature,
    attrs: &MethodAttrs,
    args: &[(Arg, Span)],
    krate: &Path,
    errors: &mut Errors,
) -> Option<Kind> {
    let has_emitter = args.iter().any(|(a, _)| matches!(a, Arg::Emitter));
    if attrs.stream.is_some() && !has_emitter {
        return stream_returning(sig, attrs, krate, errors);
    }
    let output = future_output(sig, attrs.stream.is_none(), errors)?;
    let ok = ok_type(output, krate, errors)?;
    if has_emitter {
        if let OkType::Spelled(ok) = &ok {
            if !matches!(ok, Type::Tuple(t) if t.elems.is_empty()) {
                errors.at(
                    ok,
                    "an emitter-style stream method returns `Result<(), Status>`: it sends its \
                     values through the `Emitter<T>`",
                );
                return None;
            }
        }
        let item = args.iter().find_map(|(a, _)| match a {
            Arg::Emitter => emitter_item(sig),
            _ => None,
        })?;
        return Some(Kind::Stream {
            item,
            emitter: true,
            credit: credit(attrs, errors),
        });
    }
    match ok {
        OkType::Spelled(ok) => {
            let ret = cap_return(&ok, errors)?;
            Some(Kind::Call { ok, ret })
        }
        // An alias of `Result`: caps cannot be read off it, so it returns a value.
        OkType::Projected(ok) => Some(Kind::Call {
            ok,
            ret: Ret::Value,
        }),
    }
}

fn emitter_item(sig: &Signature) -> Option<Type> {
    sig.inputs.iter().find_map(|i| match i {
        FnArg::Typed(pt) => match types::named(&pt.ty, "Emitter")?.as_slice() {
            [t] => Some((*t).clone()),
            _ => None,
        },
        _ => None,
    })
}

const RESULT: &str = "a cap method returns `Result<T, Status>` (the error may be any \
                      `E: Into<Status>`); for no value write `Result<(), Status>`";

/// The future's output: `R` of `async fn f(..) -> R` or of
/// `fn f(..) -> impl Future<Output = R>`.
fn future_output<'s>(sig: &'s Signature, is_call: bool, errors: &mut Errors) -> Option<&'s Type> {
    match (&sig.output, sig.asyncness.is_some()) {
        (ReturnType::Default, _) => {
            errors.at(
                &sig.ident,
                "a cap method returns `Result<T, Status>`: add `-> Result<(), Status>` for no value",
            );
            None
        }
        (ReturnType::Type(_, ty), true) => Some(&**ty),
        (ReturnType::Type(_, ty), false) => {
            let out = types::future_output(ty);
            if out.is_none() {
                let hint = if is_call && types::find_named(ty, "Stream").is_some() {
                    "; a method returning a stream needs `#[cap(stream)]`"
                } else {
                    ""
                };
                errors.at(
                    ty,
                    format!(
                        "a call method is an `async fn` (or returns `impl Future<Output = \
                         Result<T, Status>> + Send`){hint}"
                    ),
                );
            }
            out
        }
    }
}

/// The `T` of a result type.
enum OkType {
    /// Spelled out: `Result<T, E>`, or `Result<T>` (an alias with the error fixed).
    Spelled(Type),
    /// Another path, taken to be an alias of `Result`: `<R as MethodResult>::Ok`, checked by
    /// the compiler.
    Projected(Type),
}

fn ok_type(output: &Type, krate: &Path, errors: &mut Errors) -> Option<OkType> {
    if let Some((ok, _)) = types::result_parts(output) {
        return Some(OkType::Spelled(ok.clone()));
    }
    if let Some([ok]) = types::named(output, "Result").as_deref() {
        return Some(OkType::Spelled((*ok).clone()));
    }
    if let (true, Some(seg)) = (
        types::maybe_result_alias(output),
        types::find_named(output, "Exported"),
    ) {
        errors.at(
            seg,
            "a method returning caps spells its result out, `Result<Exported<C>, Status>`: the \
             macro reads the cap shape off it and cannot see through an alias",
        );
        return None;
    }
    if types::maybe_result_alias(output) {
        let projected = quote::quote_spanned! {output.span()=>
            <#output as #krate::__private::MethodResult>::Ok
        };
        return syn::parse2(projected).ok().map(OkType::Projected);
    }
    errors.at(output, RESULT);
    None
}

/// `fn f(..) -> impl Stream<Item = Result<T, E>> + Send + 'static`, or any stream type whose
/// item is spelled `Result<T, E>` or given as `Item = R`.
fn stream_returning(
    sig: &Signature,
    attrs: &MethodAttrs,
    krate: &Path,
    errors: &mut Errors,
) -> Option<Kind> {
    const SHAPE: &str = "a stream method is a plain `fn` returning \
                         `impl Stream<Item = Result<T, Status>> + Send + 'static`, or an \
                         `async fn` taking an `Emitter<T>` argument and returning \
                         `Result<(), Status>`";
    if let Some(a) = &sig.asyncness {
        errors.at(a, SHAPE);
        return None;
    }
    let ReturnType::Type(_, ty) = &sig.output else {
        errors.at(&sig.ident, SHAPE);
        return None;
    };
    let item = match (types::find_result(ty), types::item_binding(ty)) {
        (Some((item, _)), _) => item,
        (None, Some(bound)) if !types::maybe_result_alias(bound) => {
            errors.at(
                bound,
                "stream items are `Result<T, Status>`: a source fails the stream with an `Err`",
            );
            return None;
        }
        (None, Some(bound)) => match ok_type(bound, krate, errors)? {
            OkType::Spelled(t) | OkType::Projected(t) => t,
        },
        (None, None) => {
            errors.at(ty, SHAPE);
            return None;
        }
    };
    if let Some(seg) = types::find_named(&item, "Exported") {
        errors.at(
            seg,
            "stream values cannot carry caps: return them from a call method",
        );
        return None;
    }
    Some(Kind::Stream {
        item,
        emitter: false,
        credit: credit(attrs, errors),
    })
}

fn credit(attrs: &MethodAttrs, errors: &mut Errors) -> Option<u32> {
    let lit = attrs.credit.as_ref()?;
    match lit.base10_parse::<u32>() {
        Ok(n) if (8..=1024).contains(&n) => Some(n),
        _ => {
            errors.at(
                lit,
                "initial_credit must be within 8..=1024 (PROTOCOL §5; below 8 a bunite-core \
                 0.10 client can deadlock, §13.1)",
            );
            None
        }
    }
}

/// The cap shape of a call's `Ok` type.
fn cap_return(ok: &Type, errors: &mut Errors) -> Option<Ret> {
    if let Some(cap) = types::exported_cap(ok) {
        return Some(Ret::Cap(cap.clone()));
    }
    let Some(seg) = types::find_named(ok, "Exported") else {
        return Some(Ret::Value);
    };
    let container = types::last_segment(ok).map(|s| s.ident.to_string());
    let args = types::last_segment(ok)
        .map(types::type_args)
        .unwrap_or_default();
    let sequence = matches!(container.as_deref(), Some("Vec" | "VecDeque"));
    let map = matches!(container.as_deref(), Some("BTreeMap" | "HashMap"));
    match args.as_slice() {
        [one] if sequence => {
            if let Some(cap) = types::exported_cap(one) {
                return Some(Ret::Array(cap.clone()));
            }
            if let Type::Tuple(t) = one {
                if let (2, Some(key), Some(cap)) = (
                    t.elems.len(),
                    t.elems.first(),
                    t.elems.last().and_then(types::exported_cap),
                ) {
                    check_key(key, errors);
                    return Some(Ret::Record(cap.clone()));
                }
            }
        }
        [key, value, ..] if map => {
            if let Some(cap) = types::exported_cap(value) {
                check_key(key, errors);
                return Some(Ret::Record(cap.clone()));
            }
        }
        _ => {}
    }
    errors.at(
        seg,
        "a cap-returning method returns one cap `Exported<C>`, an array `Vec<Exported<C>>` (or \
         `VecDeque`), or a string-keyed record `BTreeMap<String, Exported<C>>` (or `HashMap`, or \
         `Vec<(String, Exported<C>)>` in the server's order)",
    );
    None
}

fn check_key(key: &Type, errors: &mut Errors) {
    if types::named(key, "String").is_none() {
        errors.at(key, "records of caps are keyed by `String`");
    }
}
