//! What a new library holds: a folder and a few prompts that show templates at work, in
//! English and Chinese.

pub const FOLDER: &str = "Getting started · 入门";

pub struct StarterPrompt {
    pub title: &'static str,
    pub content: &'static str,
    pub description: &'static str,
    pub tags: &'static [&'static str],
    pub category: &'static str,
}

pub const PROMPTS: &[StarterPrompt] = &[
    StarterPrompt {
        title: "Welcome to PromptFlow",
        content: "Hello {{name|friend}}! This prompt is a template: {{name}} is a variable \
                  with a default. Render it with your own values, edit it, and every change \
                  is kept as a version you can compare and restore.",
        description: "How templates, variables and versions work",
        tags: &["welcome"],
        category: "通用",
    },
    StarterPrompt {
        title: "Translate",
        content: "Translate the following text into {{language|English}}. Keep the tone and \
                  the formatting.\n\n{{text}}",
        description: "A translation template with a required variable",
        tags: &["translation", "template"],
        category: "写作",
    },
    StarterPrompt {
        title: "总结要点",
        content: "请用{{count|三}}个要点总结以下内容，每个要点不超过二十个字：\n\n{{text}}",
        description: "中文摘要模板",
        tags: &["总结", "template"],
        category: "写作",
    },
];
