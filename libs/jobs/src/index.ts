// Public face of @inlaid/jobs: BullMQ queue names, typed step payloads and the onboarding flow.
export { ONBOARD_QUEUE, ONBOARD_STEPS, OnboardStep, queueOf, REQUANTIZE_QUEUE, StepPayload, StepProgressData } from './queues';
export { buildOnboardFlow, DEFAULT_FLOW_OPTIONS, FlowOptions, onboardSteps, stepJobId } from './flow';
