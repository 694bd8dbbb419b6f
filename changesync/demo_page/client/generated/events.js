// Compiled from clients/typescript/src; written by `npm run build:demo-page`. Do not edit.
/* Generated from changesync/schema/events.json by `npm run generate` (json-schema-to-typescript).
 * Do not edit: change changesync/payloads.py, run `python -m changesync.schema`, then `npm run generate`.
 */
export {};
