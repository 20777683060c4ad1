//! One method: its `#[cap(...)]` options, its signature and arguments.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, LitInt, LitStr, Pat, Path, Signature, TraitItemFn, Type};

use super::returns::kind;
use super::{Arg, Errors, Kind, Method, Ret};
use crate::types;

/// The options of one method, from its `#[cap(...)]` attributes.
#[derive(Default)]
pub(super) struct MethodAttrs {
    pub(super) name: Option<LitStr>,
    pub(super) idempotent: bool,
    pub(super) stream: Option<Span>,
    pub(super) credit: Option<LitInt>,
    pub(super) dispose: Option<Span>,
    pub(super) keep_running: Option<Span>,
}

/// Removes the `#[cap(...)]` attributes of a method and parses them.
pub(super) fn take_method_attrs(f: &mut TraitItemFn, errors: &mut Errors) -> MethodAttrs {
    let mut out = MethodAttrs::default();
    let (ours, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut f.attrs)
        .into_iter()
        .partition(|a| a.path().segments.last().is_some_and(|s| s.ident == "cap"));
    f.attrs = rest;
    for attr in ours {
        let r = attr.parse_nested_meta(|meta| {
            let p = &meta.path;
            if p.is_ident("name") {
                out.name = Some(meta.value()?.parse()?);
            } else if p.is_ident("idempotent") {
                out.idempotent = true;
            } else if p.is_ident("stream") {
                out.stream = Some(p.span());
            } else if p.is_ident("initial_credit") {
                out.credit = Some(meta.value()?.parse()?);
            } else if p.is_ident("dispose") {
                out.dispose = Some(p.span());
            } else if p.is_ident("keep_running_on_cancel") {
                out.keep_running = Some(p.span());
            } else if p.is_ident("returns") {
                return Err(meta.error(
                    "cap returns are read off the return type: return `Exported<ChildCap>`, \
                     `Vec<Exported<ChildCap>>` or `BTreeMap<String, Exported<ChildCap>>`",
                ));
            } else {
                return Err(meta.error(
                    "unknown method option; expected `name = \"wireName\"`, `idempotent`, \
                     `stream`, `initial_credit = N`, `dispose` or `keep_running_on_cancel`",
                ));
            }
            Ok(())
        });
        if let Err(e) = r {
            errors.push(e);
        }
    }
    out
}

/// Validates one method and reads its arguments and return.
pub(super) fn method(
    f: &TraitItemFn,
    attrs: MethodAttrs,
    krate: &Path,
    errors: &mut Errors,
) -> Option<Method> {
    let sig = &f.sig;
    check_signature(sig, errors);
    let args = arguments(sig, attrs.stream.is_some(), errors);
    let kind = kind(sig, &attrs, &args, krate, errors);
    check_attrs(sig, &attrs, &args, kind.as_ref(), errors);
    let kind = kind?;
    let wire = match &attrs.name {
        Some(n) if n.value().is_empty() => {
            errors.at(n, "the wire name cannot be empty");
            return None;
        }
        Some(n) => n.value(),
        None => heck::ToLowerCamelCase::to_lower_camel_case(
            sig.ident.to_string().trim_start_matches("r#"),
        ),
    };
    let args = args.into_iter().map(|(a, _)| a).collect();
    Some(Method {
        ident: sig.ident.clone(),
        wire,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        args,
        kind,
        idempotent: attrs.idempotent,
        keep_running: attrs.keep_running.is_some(),
        disposal: attrs.dispose.is_some(),
    })
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.at(
            &sig.generics,
            "a cap method cannot be generic: the server must know the concrete type to decode \
             the call's params",
        );
    }
    if let Some(c) = &sig.constness {
        errors.at(c, "a cap method cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.at(u, "a cap method cannot be `unsafe`");
    }
    if let Some(a) = &sig.abi {
        errors.at(a, "a cap method cannot have an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.at(v, "a cap method cannot be variadic");
    }
    match sig.receiver() {
        None => errors.at(
            &sig.ident,
            "a cap method takes `&self`: add `&self` as its first argument",
        ),
        Some(r) if r.reference.is_none() => errors.at(
            r,
            "cap methods take `&self`, not `self`: one implementation serves every call",
        ),
        Some(r) if r.mutability.is_some() => errors.at(
            r,
            "cap methods take `&self`, not `&mut self`: calls run concurrently on one shared \
             implementation; keep mutable state behind a `Mutex` or atomics",
        ),
        Some(r) if r.colon_token.is_some() && !is_ref_self(&r.ty) => {
            errors.at(r, "cap methods take `&self`")
        }
        Some(_) => {}
    }
}

fn is_ref_self(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none()
        && matches!(&*r.elem, Type::Path(p) if p.path.is_ident("Self")))
}

/// The arguments after the receiver, each with its span for later checks.
fn arguments(sig: &Signature, is_stream: bool, errors: &mut Errors) -> Vec<(Arg, Span)> {
    let mut out: Vec<(Arg, Span)> = Vec::new();
    let mut first_params: Option<syn::PatType> = None;
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else { continue };
        let ty = &*pt.ty;
        let span = pt.span();
        let arg = if types::is_context(ty) {
            if out.iter().any(|(a, _)| matches!(a, Arg::Context)) {
                errors.at(pt, "a cap method takes at most one `CallContext` argument");
            }
            Arg::Context
        } else if let Some(args) = types::named(ty, "Emitter") {
            if args.len() != 1 {
                errors.at(
                    ty,
                    "an emitter argument is `bunite_rpc::typed::Emitter<T>`, with `T` the type \
                     of the stream's values",
                );
            } else if !is_stream {
                errors.at(
                    pt,
                    "an `Emitter<T>` argument makes a stream method: add `#[cap(stream)]`",
                );
            }
            if out.iter().any(|(a, _)| matches!(a, Arg::Emitter)) {
                errors.at(
                    pt,
                    "a stream method takes at most one `Emitter<T>` argument",
                );
            }
            Arg::Emitter
        } else {
            check_params_type(ty, errors);
            if let Some(first) = &first_params {
                let mut e = syn::Error::new_spanned(
                    pt,
                    "a cap method takes at most one params argument (sent as the call's single \
                     `args` value): put these values together in one serde struct",
                );
                e.combine(syn::Error::new_spanned(
                    first,
                    "the first params argument is here",
                ));
                errors.push(e);
            } else {
                first_params = Some(pt.clone());
            }
            let name = match &*pt.pat {
                Pat::Ident(p) if p.subpat.is_none() => {
                    Ident::new(&p.ident.to_string(), p.ident.span())
                }
                _ => Ident::new("params", pt.pat.span()),
            };
            Arg::Params {
                name,
                ty: ty.clone(),
            }
        };
        out.push((arg, span));
    }
    out
}

fn check_params_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(r) if types::is_context(&r.elem) => errors.at(
            ty,
            "take the `CallContext` by value: `ctx: CallContext` (it is cheap to clone)",
        ),
        Type::Reference(_) => errors.at(
            ty,
            "params are decoded into an owned value: take `String` rather than `&str`, `Vec<T>` \
             rather than `&[T]`",
        ),
        Type::ImplTrait(_) => errors.at(
            ty,
            "params need a concrete serde type, not `impl Trait`: the server decodes into it",
        ),
        _ => {}
    }
}

fn check_attrs(
    sig: &Signature,
    attrs: &MethodAttrs,
    args: &[(Arg, Span)],
    kind: Option<&Kind>,
    errors: &mut Errors,
) {
    if let (Some(c), None) = (&attrs.credit, attrs.stream) {
        errors.at(
            c,
            "`initial_credit` applies to stream methods: add `stream`",
        );
    }
    if let (Some(k), Some(_)) = (attrs.keep_running, attrs.stream) {
        errors.at_span(k, "`keep_running_on_cancel` applies to call methods");
    }
    let Some(d) = attrs.dispose else { return };
    if attrs.stream.is_some() {
        errors.at_span(d, "the disposal method must be a call method, not a stream");
    }
    if let Some((_, span)) = args.iter().find(|(a, _)| matches!(a, Arg::Params { .. })) {
        errors.at_span(
            *span,
            "the disposal method is called with no arguments: remove the params argument",
        );
    }
    if let Some(Kind::Call { ret, .. }) = kind {
        if !matches!(ret, Ret::Value) {
            errors.at(&sig.output, "the disposal method cannot return caps");
        }
    }
}
