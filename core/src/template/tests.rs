use std::collections::HashMap;

use super::*;

fn parse(source: &str) -> Template {
    Template::parse(source).expect("template parses")
}

fn render(template: &Template, values: &[(&str, &str)]) -> Result<String, MissingField> {
    let values: HashMap<&str, &str> = values.iter().copied().collect();
    template.render(|name| values.get(name).copied())
}

#[test]
fn render_replaces_fields() {
    let template = parse("Hi {{first_name}}, about {{company}}.");
    let output = render(&template, &[("first_name", "Ada"), ("company", "Acme")]);
    assert_eq!(output, Ok("Hi Ada, about Acme.".to_owned()));
}

#[test]
fn render_plain_text_verbatim() {
    let source = "No placeholders here.\n  Indented line, tab\tand ünïcödé.\n";
    let template = parse(source);
    assert_eq!(render(&template, &[]), Ok(source.to_owned()));
    assert_eq!(template.fields().count(), 0);
}

#[test]
fn render_empty_source() {
    let template = parse("");
    assert_eq!(render(&template, &[]), Ok(String::new()));
    assert_eq!(template.source(), "");
}

#[test]
fn render_uses_fallback_when_missing() {
    let template = parse("Hi {{first_name|there}}!");
    assert_eq!(render(&template, &[]), Ok("Hi there!".to_owned()));
}

#[test]
fn render_uses_fallback_when_empty() {
    let template = parse("Hi {{first_name|there}}!");
    assert_eq!(render(&template, &[("first_name", "")]), Ok("Hi there!".to_owned()));
}

#[test]
fn render_prefers_value_to_fallback() {
    let template = parse("Hi {{first_name|there}}!");
    assert_eq!(render(&template, &[("first_name", "Ada")]), Ok("Hi Ada!".to_owned()));
}

#[test]
fn render_empty_fallback() {
    let template = parse("Hi{{ title |}} Ada");
    assert_eq!(render(&template, &[]), Ok("Hi Ada".to_owned()));
    assert_eq!(render(&template, &[("title", " Dr.")]), Ok("Hi Dr. Ada".to_owned()));
}

#[test]
fn render_missing_field_error() {
    let template = parse("Hi {{first_name}}, from {{company}}");
    let error = render(&template, &[("company", "Acme")]).expect_err("first_name is missing");
    assert_eq!(error, MissingField { name: "first_name".to_owned() });
}

#[test]
fn render_empty_value_is_missing() {
    let template = parse("Hi {{first_name}}");
    let error = render(&template, &[("first_name", "")]).expect_err("empty counts as missing");
    assert_eq!(error.name, "first_name");
}

#[test]
fn render_repeated_field() {
    let template = parse("{{x}}-{{x}}-{{ x | none }}");
    assert_eq!(render(&template, &[("x", "1")]), Ok("1-1-1".to_owned()));
}

#[test]
fn render_with_contact_field() {
    use crate::domain::Contact;
    use crate::ids::{ContactId, TenantId};

    let contact = Contact {
        id: ContactId::generate(),
        tenant: TenantId::generate(),
        external_id: None,
        first_name: Some("Ada".to_owned()),
        last_name: None,
        full_name: None,
        email: None,
        phone: None,
        timezone: "Europe/London".to_owned(),
        custom: [("plan.tier".to_owned(), "gold".to_owned())].into_iter().collect(),
    };
    let template = parse("{{first_name}} ({{plan.tier}}) {{last_name|}}");
    let output = template.render(|name| contact.field(name));
    assert_eq!(output, Ok("Ada (gold) ".to_owned()));

    // Upload columns are stored in lowercase, and a field named as the column header finds them.
    let capitalised = parse("{{Plan.Tier}}");
    assert_eq!(capitalised.render(|name| contact.field(name)), Ok("gold".to_owned()));
}

#[test]
fn parse_trims_name_and_fallback() {
    let spaced = parse("{{  first_name \t|  dear friend  }}");
    let tight = parse("{{first_name|dear friend}}");
    assert_eq!(render(&spaced, &[]), Ok("dear friend".to_owned()));
    assert_eq!(spaced.fields().collect::<Vec<_>>(), ["first_name"]);
    assert_eq!(render(&tight, &[]), render(&spaced, &[]));
}

#[test]
fn parse_fallback_keeps_later_pipes() {
    let template = parse("{{a|b|c}}");
    assert_eq!(render(&template, &[]), Ok("b|c".to_owned()));
}

#[test]
fn parse_accepts_name_characters() {
    let names = ["first_name", "Company-Name", "plan.tier", "x1", "9", "prénom", "名前", "имя"];
    for name in names {
        let template = parse(&format!("{{{{{name}}}}}"));
        assert_eq!(template.fields().collect::<Vec<_>>(), [name], "name {name:?}");
    }
}

#[test]
fn parse_lone_braces_are_text() {
    let source = "a { b } c {d} }} e";
    let template = parse(source);
    assert_eq!(render(&template, &[]), Ok(source.to_owned()));
}

#[test]
fn parse_extra_braces_are_text() {
    let template = parse("{{{x}}} and {{{{y}}}}");
    let output = render(&template, &[("x", "1"), ("y", "2")]);
    assert_eq!(output, Ok("{1} and {{2}}".to_owned()));
}

#[test]
fn parse_rejects_unclosed() {
    let error = Template::parse("Hi {{first_name, bye").expect_err("unclosed");
    assert_eq!(error, TemplateError::Unclosed { offset: 3, line: 1, column: 4 });
}

#[test]
fn parse_rejects_single_closing_brace() {
    let error = Template::parse("Hi {{first_name}").expect_err("unclosed");
    assert_eq!(error, TemplateError::Unclosed { offset: 3, line: 1, column: 4 });
}

#[test]
fn parse_rejects_open_before_close() {
    let error = Template::parse("{{a {{b}}").expect_err("first placeholder unclosed");
    assert_eq!(error, TemplateError::Unclosed { offset: 0, line: 1, column: 1 });
}

#[test]
fn parse_rejects_empty_field() {
    for source in ["{{}}", "x {{  }}", "x {{|fallback}}", "x {{ | }}"] {
        let error = Template::parse(source).expect_err("empty field");
        assert!(matches!(error, TemplateError::EmptyField { .. }), "{source:?}: {error:?}");
    }
    let error = Template::parse("ab{{}}").expect_err("empty field");
    assert_eq!(error, TemplateError::EmptyField { offset: 2, line: 1, column: 3 });
}

#[test]
fn parse_rejects_invalid_field() {
    for name in ["first name", "a/b", "x!", "a:b", "a}b", "a\tb"] {
        let error = Template::parse(&format!("{{{{{name}}}}}")).expect_err("invalid name");
        let expected =
            TemplateError::InvalidField { offset: 0, line: 1, column: 1, name: name.to_owned() };
        assert_eq!(error, expected, "name {name:?}");
    }
}

#[test]
fn error_position_counts_lines_and_chars() {
    let source = "Héllo,\nçà {{first name}}";
    let error = Template::parse(source).expect_err("invalid name");
    let offset = source.find("{{").expect("placeholder present");
    assert_eq!(offset, 13);
    assert_eq!(error.offset(), 13);
    let expected =
        TemplateError::InvalidField { offset, line: 2, column: 4, name: "first name".to_owned() };
    assert_eq!(error, expected);
}

#[test]
fn error_messages_say_where_and_what() {
    let unclosed = Template::parse("a\n{{x").expect_err("unclosed").to_string();
    assert_eq!(
        unclosed,
        "unclosed placeholder at byte 2 (line 2, column 1): close the `{{` with `}}`"
    );

    let empty = Template::parse("{{ }}").expect_err("empty").to_string();
    assert!(empty.starts_with("empty placeholder at byte 0 (line 1, column 1)"), "{empty}");
    assert!(empty.contains("`{{first_name}}`"), "{empty}");

    let invalid = Template::parse("{{a b}}").expect_err("invalid").to_string();
    assert!(invalid.starts_with("invalid field name \"a b\" at byte 0"), "{invalid}");

    let missing = MissingField { name: "company".to_owned() }.to_string();
    assert!(missing.contains("`{{company|fallback}}`"), "{missing}");
}

#[test]
fn fields_distinct_in_order() {
    let template = parse("{{b}} {{a|x}} {{b|y}} {{c}} {{a}}");
    assert_eq!(template.fields().collect::<Vec<_>>(), ["b", "a", "c"]);
}

#[test]
fn required_fields_skip_fallbacks() {
    let template = parse("{{b}} {{a|x}} {{c|}} {{d}}");
    assert_eq!(template.required_fields().collect::<Vec<_>>(), ["b", "d"]);
}

#[test]
fn required_if_any_use_lacks_fallback() {
    let template = parse("{{a|x}} {{a}}");
    assert_eq!(template.required_fields().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn missing_fields_lists_all() {
    let template = parse("{{a}} {{b}} {{c|x}} {{d}}");
    let values: HashMap<&str, &str> = [("b", "1"), ("d", "")].into_iter().collect();
    let missing = template.missing_fields(|name| values.get(name).copied());
    assert_eq!(missing, ["a", "d"]);
}

#[test]
fn source_is_kept() {
    let source = "Hi {{ first_name | there }}";
    assert_eq!(parse(source).source(), source);
}

#[test]
fn from_str_matches_parse() {
    let template: Template = "Hi {{x}}".parse().expect("template parses");
    assert_eq!(template, parse("Hi {{x}}"));
    assert!("{{".parse::<Template>().is_err());
}

#[test]
fn html_rendering_escapes_field_values() {
    let template =
        parse("<p>Hi {{first_name}}, see <a href=\"{{site}}\">this</a> {{last|<b>friend</b>}}</p>");
    let values: HashMap<&str, &str> =
        [("first_name", "<script>alert(1)</script>"), ("site", "x\" onclick=\"steal()")]
            .into_iter()
            .collect();
    let rendered =
        template.render_encoded(|name| values.get(name).copied(), escape_html).expect("renders");
    assert_eq!(
        rendered,
        "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt;, see \
         <a href=\"x&quot; onclick=&quot;steal()\">this</a> <b>friend</b></p>"
    );
}

#[test]
fn escape_html_covers_each_special_character() {
    let mut output = String::new();
    escape_html("a&b<c>d\"e'f", &mut output);
    assert_eq!(output, "a&amp;b&lt;c&gt;d&quot;e&#39;f");
}
